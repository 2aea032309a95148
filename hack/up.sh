#!/usr/bin/env bash
# README command 1: set up, start the local control plane, install the CRD, apply examples/,
# and run the operator in the foreground. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
exec .venv/bin/python hack/up.py "$@"
