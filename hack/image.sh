#!/usr/bin/env bash
# Builds images without a Docker engine or a registry, with buildah (rootful; CI is root).
#
#   hack/image.sh [OUT.tar]          the operator image from the Dockerfile, on a Debian base
#                                    made by mmdebstrap; OUT.tar is a docker-archive for
#                                    `ctr images import` (default .local/image/bgjob-operator.tar)
#   hack/image.sh node-images DIR    the real node's pause image and a busybox image for the
#                                    examples, FROM scratch, as DIR/pause.tar and DIR/busybox.tar
#   hack/image.sh retag SRC DST OUT.tar  DST: SRC with one more label (a changed image for the
#                                    upgrade test: same files, another image ID)
#
# Node and retagged images are committed with --timestamp 0: the same input gives the same
# image, so repeated runs leave no dangling copies behind.
# Env: IMAGE (default localhost/bgjob/bgjob-operator:dev), BASE_IMAGE (default: the local
# Debian base below; set python:3.12-slim where a registry is reachable).
# With Docker instead: docker build -t bgjob/bgjob-operator:0.1.0 .
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/.local/image
mkdir -p "$work"

for tool in buildah podman mmdebstrap; do
  command -v "$tool" >/dev/null || {
    echo "image: $tool is missing; as root: apt-get install -y buildah podman runc mmdebstrap" >&2
    exit 1
  }
done
[ "$(id -u)" = 0 ] || { echo "image: run as root (rootful buildah, mmdebstrap --mode=root)" >&2; exit 1; }

# Sandboxes like this machine kind lack CAP_SYS_RESOURCE: buildah's default rlimits fail
# ("error setting rlimit type 7"), and crun does not support cgroups v1 hybrid mode; runc does.
export CONTAINERS_CONF=$work/containers.conf
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF

PAUSE_IMAGE=registry.k8s.io/pause:3.10
BUSYBOX_IMAGE=docker.io/library/busybox:1.36

# FROM scratch: a static pause (kubelet's own pause.c from the module cache) as the sandbox image.
node_images() {
  local out=$1 stage ctr src
  mkdir -p "$out"
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' RETURN
  src=$(cd hack/cluster && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  mkdir -p "$stage/pause" "$stage/busybox/bin"
  gcc -Os -static -DVERSION=3.10-bgjob -o "$stage/pause/pause" "$src"
  ctr=$(buildah from scratch)
  buildah copy "$ctr" "$stage/pause/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  buildah commit --quiet --rm --timestamp 0 "$ctr" "$PAUSE_IMAGE" >/dev/null
  rm -f "$out/pause.tar"
  buildah push --quiet "$PAUSE_IMAGE" "docker-archive:$out/pause.tar:$PAUSE_IMAGE"
  # busybox for the examples (busybox:1.36): Debian's static busybox and its applet links.
  cp /bin/busybox "$stage/busybox/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$stage/busybox/bin/$applet"
  done
  ctr=$(buildah from scratch)
  buildah copy "$ctr" "$stage/busybox" / >/dev/null
  buildah config --cmd '["sh"]' --env PATH=/bin "$ctr"
  buildah commit --quiet --rm --timestamp 0 "$ctr" "$BUSYBOX_IMAGE" >/dev/null
  rm -f "$out/busybox.tar"
  buildah push --quiet "$BUSYBOX_IMAGE" "docker-archive:$out/busybox.tar:$BUSYBOX_IMAGE"
}

# A python:3.12-slim stand-in from Debian's packages (no registry needed), made once.
# The tag names the recipe: change it when the recipe changes.
LOCAL_BASE=localhost/bgjob/debian-python:3.11-bookworm-r2
local_base() {
  if podman image exists "$LOCAL_BASE"; then return; fi
  local tar=$work/debian-python-bookworm.tar
  if [ ! -f "$tar" ]; then
    echo "image: making the Debian base with mmdebstrap (about 30 s)" >&2
    # usrmerge (and so perl, 46 MB) is only needed to merge /usr, which mmdebstrap does itself.
    local perl="usrmerge libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl"
    perl+=" perl libperl5.36 perl-modules-5.36"
    mmdebstrap --quiet --variant=essential --mode=root \
      --include=usr-is-merged,python3,python3-venv,python3-pip,ca-certificates \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
      --customize-hook="chroot \"\$1\" dpkg --purge $perl >/dev/null" \
      bookworm "$work/base.part.tar"  # the extension selects mmdebstrap's output format
    mv "$work/base.part.tar" "$tar"
  fi
  podman import --quiet --change 'CMD ["python3"]' "$tar" "$LOCAL_BASE" >/dev/null
  rm -f "$tar"
}

if [ "${1:-}" = retag ]; then
  ctr=$(buildah from --pull=never "$2")
  buildah config --label dev.bgjob.rebuilt=1 "$ctr"
  buildah commit --quiet --rm --timestamp 0 "$ctr" "$3" >/dev/null
  rm -f "$4"
  buildah push --quiet "$3" "docker-archive:$4:$3"
  exit 0
fi

if [ "${1:-}" = node-images ]; then
  node_images "${2:?usage: hack/image.sh node-images DIR}"
  exit 0
fi

out=${1:-$work/bgjob-operator.tar}
image=${IMAGE:-localhost/bgjob/bgjob-operator:dev}
base=${BASE_IMAGE:-$LOCAL_BASE}
[ "$base" != "$LOCAL_BASE" ] || local_base
# pip in the build needs this machine's package-index settings and CA bundle.
mounts=()
for f in /etc/pip.conf /etc/ssl/certs/ca-certificates.crt; do
  [ ! -f "$f" ] || mounts+=(-v "$f:$f:ro")
done
start=$(date +%s)
buildah bud --quiet --layers --network host "${mounts[@]}" --build-arg "BASE_IMAGE=$base" \
  -t "$image" . >/dev/null
rm -f "$out"
buildah push --quiet "$image" "docker-archive:$out:$image"
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "image: $image built in $(( $(date +%s) - start ))s, $(( size / 1000000 )) MB" \
  "($(( $(stat -c %s "$out") / 1000000 )) MB archive $out)" >&2
echo "$out"
