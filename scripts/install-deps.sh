#!/usr/bin/env bash
# Installs the PostgreSQL server binaries (initdb, pg_ctl) when the machine
# lacks them and DATABASE_URL does not point at a running server.
set -euo pipefail
if [ -n "${DATABASE_URL:-}" ]; then exit 0; fi
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL server binaries are missing: install them (sudo apt-get install postgresql) or set DATABASE_URL" >&2
  exit 1
fi
echo "installing PostgreSQL server binaries (apt-get install postgresql)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
