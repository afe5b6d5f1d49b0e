#!/usr/bin/env bash
# The whole test suite: lint, types, unit tests and the local-cluster tests.
# Every stage runs; the script fails if any of them failed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=setup.sh
source "$ROOT/scripts/setup.sh" || exit 1
set +e  # every stage runs; their outcomes are collected below
cd "$ROOT" || exit 1
failed=()
echo ">>> ruff"
ruff check ganeti_lv tests bench || failed+=("ruff check")
ruff format --check ganeti_lv tests bench || failed+=("ruff format")
echo ">>> mypy"
mypy || failed+=("mypy")
# fetched, built and installed here, outside the tests' time limits (quick when done before)
echo ">>> the clusters' parts (qemu, the test guest, the Ganeti peer's packages)"
gnt-lv-devcluster prepare --with-peer || failed+=("prepare")
echo ">>> pytest"
python -m pytest -ra "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  failed+=("pytest (no tests)")
elif [ "$rc" -ne 0 ]; then
  failed+=("pytest")
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "all stages passed"
