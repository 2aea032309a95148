#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: a virtualenv with the pinned dev
# dependencies, and the local control plane binaries (built from Go modules, cached).
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
