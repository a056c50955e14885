#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, lint, format and type checks, tests (browser tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# setup.sh installed PostgreSQL: the label-store tests against it must run, not skip
export SELAVI_NO_PROGRESS=1 NUMBA_THREADING_LAYER=workqueue PYTHONUNBUFFERED=1 SELAVI_REQUIRE_POSTGRES=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # configured in pyproject.toml: selavi_core, every function annotated
.venv/bin/python -m pytest -q -ra "$@"
