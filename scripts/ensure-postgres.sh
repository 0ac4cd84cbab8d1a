#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the job-store tests and exports
# BRIDGE_TEST_POSTGRES_URL. Starts an installed cluster, or installs Debian's package (root only).
pg_url_default="postgresql://postgres@127.0.0.1:5432/postgres"
if [ -n "${BRIDGE_TEST_POSTGRES_URL:-}" ]; then
  return 0 2>/dev/null || exit 0
fi
pg_up() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }
if ! pg_up; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1 && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "ensure-postgres: installing PostgreSQL from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if ls /etc/postgresql/*/main >/dev/null 2>&1; then
    ver=$(ls /etc/postgresql | head -n1)
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || pg_ctlcluster "$ver" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  fi
fi
if pg_up; then
  if ! psql "$pg_url_default" -Atc "select 1" >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    # A fresh Debian cluster wants a password over TCP: give the postgres role one for the tests.
    su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null 2>&1 || true
    pg_url_default="postgresql://postgres:postgres@127.0.0.1:5432/postgres"
  fi
  export BRIDGE_TEST_POSTGRES_URL="$pg_url_default"
else
  echo "ensure-postgres: no PostgreSQL on 127.0.0.1:5432; PostgreSQL job-store tests will be skipped" >&2
fi
