#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: system packages, .venv, pinned requirements, and the
# project itself (editable, so .venv/bin/selavi exists). Re-running skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# ffmpeg: decode benchmark baseline; espeak-ng: demo speech when ../shared/data is absent;
# chromium + chromium-driver: the browser tests (Playwright drives Debian's chromium; it never downloads one).
missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# postgresql: the label-store tests start a throw-away server (tests/pg_server.py); Debian keeps initdb and
# pg_ctl in /usr/lib/postgresql/VERSION/bin, off PATH, so look there too.
command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} (apt)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.selavi-requirements
want=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
