#!/usr/bin/env bash
# README command 2: the whole suite — lint, type check, generated files, unit and integration
# tests against the local control plane.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff";  ruff check operator tests hack
echo "== mypy";  mypy
echo "== imports"; lint-imports
echo "== crds";  python -m bgjob.crd --check
echo "== pytest"
pytest "$@"
