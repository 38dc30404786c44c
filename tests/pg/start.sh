#!/usr/bin/env bash
# Starts a throwaway PostgreSQL on 127.0.0.1 for the tests and prints, on stdout, the lines to
# eval: `eval "$(tests/pg/start.sh)"` sets TEST_PG_URL and TEST_PG_STOP (a command that stops it
# and removes its data). Installs Debian's postgresql package when no server is found, unless
# SLUICE_PG_NO_INSTALL=1 (the test suite starts a server this way only from what is installed).
set -euo pipefail

find_bin() {
  local dir
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"; return
  fi
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/pg_ctl" ] && { echo "$dir"; return; }
  done
  return 1
}

if ! bin=$(find_bin); then
  if [ "${SLUICE_PG_NO_INSTALL:-}" = 1 ]; then
    echo "no PostgreSQL server binaries (initdb, pg_ctl) on this machine" >&2
    exit 3
  fi
  echo "installing postgresql from the distribution's packages" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
  bin=$(find_bin)
fi

data=$(mktemp -d /tmp/sluice-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# PostgreSQL refuses to run as root: use its own account when we are root.
run=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$data" postgres
  chown -R postgres "$data"
  run=(runuser -u postgres --)
fi
"${run[@]}" "$bin/initdb" -D "$data/db" -U sluice --auth=trust -E UTF8 >/dev/null
"${run[@]}" "$bin/pg_ctl" -D "$data/db" -l "$data/log" -w \
  -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$data -c fsync=on -c max_connections=200" start >&2
echo "export TEST_PG_URL='postgres://sluice@127.0.0.1:$port/postgres'"
echo "export TEST_PG_STOP='${run[*]} $bin/pg_ctl -D $data/db -m fast stop >/dev/null; rm -rf $data'"
