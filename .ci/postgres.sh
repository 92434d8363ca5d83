#!/usr/bin/env bash
# Start a throwaway PostgreSQL on a free loopback port for the index tests; print its URL.
# Best effort: exits non-zero (and CI skips those tests) where it cannot be set up.
set -euo pipefail
PGPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
DATA=$(mktemp -d /tmp/promptrev-pg.XXXXXX)
chown postgres "$DATA"
su postgres -c "$BIN/initdb -D $DATA -A trust -U postgres" >/dev/null
su postgres -c "$BIN/pg_ctl -D $DATA -w -o '-k /tmp -p $PGPORT -c listen_addresses=127.0.0.1' -l $DATA/log start" >/dev/null
su postgres -c "psql -h 127.0.0.1 -p $PGPORT -U postgres -qc 'CREATE DATABASE promptrev_test'" >/dev/null
echo "$DATA" > /tmp/promptrev-pg.datadir
echo "postgresql+psycopg://postgres@127.0.0.1:$PGPORT/promptrev_test"
