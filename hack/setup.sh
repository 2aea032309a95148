#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: a virtualenv with the pinned dev
# dependencies, the local control plane binaries (built from Go modules, cached), and Debian's
# prometheus package for promtool and a real Prometheus in the monitoring tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
for tool in go openssl; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is required on PATH" >&2; exit 1; }
done
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
bash hack/cluster/build.sh >/dev/null

# prometheus + promtool (Debian's package): the tests start Prometheus themselves on 127.0.0.1.
# The package would also start a system service on 0.0.0.0:9090; policy-rc.d (exit 101) forbids
# that while it installs, and the service is disabled afterwards.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    policy=/usr/sbin/policy-rc.d
    ours=""
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    install=(apt-get install -y -q --no-install-recommends prometheus)
    if ! "${install[@]}" >/dev/null 2>&1; then
      apt-get update -q >/dev/null && "${install[@]}" >/dev/null ||
        echo "setup: installing prometheus failed; the monitoring tests will fail" >&2
    fi
    if [ -d /run/systemd/system ]; then
      systemctl disable --now prometheus >/dev/null 2>&1 || true
    else
      update-rc.d prometheus disable >/dev/null 2>&1 || true
      if [ -x /etc/init.d/prometheus ]; then /etc/init.d/prometheus stop >/dev/null 2>&1 || true; fi
    fi
    if [ -n "$ours" ]; then rm -f "$policy"; fi
  else
    echo "setup: prometheus and promtool are missing, so the monitoring tests will fail." >&2
    echo "setup: as root run: apt-get install -y --no-install-recommends prometheus" >&2
    echo "setup: (then stop/disable its service), or put both binaries (2.42 or newer) on PATH." >&2
  fi
fi

# The real node of the e2e suite (tests/e2e, hack/cluster/realnode.py): containerd, runc, the
# CNI plugins, buildah/podman/mmdebstrap for the image, busybox-static for the examples' image,
# and the kubelet and kube-scheduler built like the control plane. As root (CI) they are
# installed here; without root the e2e suite fails and names what to install.
node_pkgs="containerd runc containernetworking-plugins buildah podman mmdebstrap busybox-static gcc libc6-dev"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  node_missing=""
  for tool in containerd runc ctr buildah podman mmdebstrap gcc; do
    command -v "$tool" >/dev/null || node_missing=1
  done
  [ -x /usr/lib/cni/bridge ] && [ -x /bin/busybox ] || node_missing=1
  if [ -n "$node_missing" ]; then
    # containerd and podman ship services: policy-rc.d (exit 101) keeps them from starting
    # (the node runs its own containerd with its own socket and state).
    policy=/usr/sbin/policy-rc.d
    ours=""
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    install=(apt-get install -y -q --no-install-recommends $node_pkgs)
    if ! "${install[@]}" >/dev/null 2>&1; then
      apt-get update -q >/dev/null && "${install[@]}" >/dev/null ||
        echo "setup: installing the real node's packages failed; the e2e tests will fail" >&2
    fi
    if [ -n "$ours" ]; then rm -f "$policy"; fi
  fi
  bash hack/cluster/build.sh node >/dev/null
else
  echo "setup: not root, so the real node's packages are not installed and the e2e tests" \
       "(tests/e2e) will fail; as root: apt-get install -y --no-install-recommends $node_pkgs" >&2
fi
