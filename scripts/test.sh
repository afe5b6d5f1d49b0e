#!/usr/bin/env bash
# The whole test suite: lint, types, unit tests and the local-cluster tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=setup.sh
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
echo ">>> ruff"
ruff check ganeti_lv tests
ruff format --check ganeti_lv tests
echo ">>> mypy"
mypy
echo ">>> pytest"
set +e
python -m pytest -ra "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
