#!/usr/bin/env bash
# Install (if needed) and start a local PostgreSQL server with a 'stmsearch' database, for the storage tests.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
data=${PGDATA_DIR:-/tmp/stmsearch-pg}
if [ ! -f "$data/PG_VERSION" ]; then
  mkdir -p "$data" && chown postgres "$data"
  su postgres -c "$bin/initdb -D $data -A trust -U postgres" >/dev/null
fi
if ! su postgres -c "$bin/pg_ctl -D $data status" >/dev/null 2>&1; then
  su postgres -c "$bin/pg_ctl -D $data -l $data/server.log -o '-c listen_addresses=127.0.0.1 -p 5432 -k /tmp' -w start" >/dev/null
fi
psql="psql -h 127.0.0.1 -p 5432 -U postgres -v ON_ERROR_STOP=1 -q"
$psql -tc "SELECT 1 FROM pg_roles WHERE rolname='stmsearch'" | grep -q 1 || $psql -c "CREATE ROLE stmsearch LOGIN PASSWORD 'stmsearch'"
$psql -tc "SELECT 1 FROM pg_database WHERE datname='stmsearch'" | grep -q 1 || $psql -c "CREATE DATABASE stmsearch OWNER stmsearch"
echo "PostgreSQL ready on 127.0.0.1:5432 (database stmsearch)"
