#!/usr/bin/env bash
# mmal's GPU checks in one command: a table of "ok", "FAILED" or "not run: why", one line per
# check. The logic lives in benchmarks/gpu_check.py (see its docstring, or --help).
#
#   benchmarks/gpu_check.sh              # every check, under 8 minutes on one GPU
#   benchmarks/gpu_check.sh --dry-run    # the table without running anything
#
# Python: $PYTHON if set, else the repository's .venv if there is one, else python3.
set -u
cd "$(dirname "$0")/.." || exit 2
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" -m benchmarks.gpu_check "$@"
