#!/usr/bin/env bash
# The test suite, from a fresh machine: set up the environment (tools/setup_env.sh), then run pytest with one
# pytest-xdist worker per CPU core (SEG_D2_TEST_WORKERS overrides; 0 = in this process). A test file's tests
# stay on one worker (--dist loadfile), so its module-scoped fixtures (trained models, runs) are built once; the files
# go out in the order tests/conftest.py sorts them, those with a `long` test first (--no-loadscope-reorder). The
# 25 slowest tests are listed at the end (the suite's time is watched: README).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$SEG_D2_ROOT"
set +e
python -m pytest -n "${SEG_D2_TEST_WORKERS:-auto}" --dist loadfile --no-loadscope-reorder --durations 25 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
