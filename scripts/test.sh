#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install what it needs, lint, type-check, run every test.
# The README's test command, and exactly what .ci/run runs (docs/development.md).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e '.[dev]'

# A real PostgreSQL server for the publish and end-to-end tests. The suite starts its own (initdb + pg_ctl in a
# temp dir); here we only make sure the binaries exist. As root on Debian we install them from the system's
# packages; elsewhere the suite falls back to the server bundled in the pgserver wheel.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing the PostgreSQL server from the system's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "no PostgreSQL binaries and not root: the suite uses the pgserver wheel's server"
  fi
fi

# Caddy (the HTTPS tests run deploy/Caddyfile in front of a real landing), systemd (`systemd-analyze verify`
# on the units in deploy/) and headless Chromium (the analysts' report is opened in a real browser), from the
# system's packages as root on Debian.
missing=()
command -v caddy >/dev/null 2>&1 || missing+=(caddy)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} from the system's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing ${missing[*]} and not root: install them (Debian: apt-get install ${missing[*]})" >&2
    exit 2
  fi
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== import-linter (layers: core <- landing, transforms <- flows <- demo <- cli; rich only in the CLI)"
.venv/bin/lint-imports
echo "== pytest"
# The same property-test examples on every run (tests/conftest.py): the fast loop searches at random instead.
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
.venv/bin/pytest -q "$@"
