#!/usr/bin/env bash
# Installs what the tests need from Debian when the machine lacks it: the
# PostgreSQL server binaries (initdb, pg_ctl; unless DATABASE_URL points at a
# running server) and chromium (the browser test drives it headless).
set -euo pipefail
missing=()
if [ -z "${DATABASE_URL:-}" ] && ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ -z "${SI_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  missing+=(chromium)
fi
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing: ${missing[*]}: install them (sudo apt-get install ${missing[*]}), or set DATABASE_URL / SI_CHROMIUM" >&2
  exit 1
fi
echo "installing ${missing[*]} (apt-get)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
