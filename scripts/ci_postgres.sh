#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on loopback for the PSP tests (tests/test_psp_*.py).
#
#   eval "$(bash scripts/ci_postgres.sh)"      # or: source scripts/ci_postgres.sh
#   bash scripts/ci_postgres.sh --stop          # stop it again
#
# Installs the Debian `postgresql` package if no server binaries are found (root only), runs
# its own cluster in $HYPEROBF_PG_DIR (default /tmp/hyperobf-pg-<port>) listening on
# 127.0.0.1:$HYPEROBF_PG_PORT (default 54329) only, and creates role/database `hyperobf` /
# `hyperobf_test`. Idempotent (a running server is reused) and never fatal: it always exits 0
# and prints either
#   export HYPEROBF_TEST_PG_URL=postgresql+psycopg://...
# or
#   export HYPEROBF_TEST_PG_SKIP_REASON='...'
# on stdout (everything else goes to stderr); the tests skip with that reason when no URL is set.

_hyperobf_pg_main() {
    local port="${HYPEROBF_PG_PORT:-54329}"
    local dir="${HYPEROBF_PG_DIR:-/tmp/hyperobf-pg-$port}"
    local user=hyperobf db=hyperobf_test pw=hyperobf  # loopback-only throw-away test server
    local bindir="" run=() me
    me="$(id -u)"

    log() { echo "ci_postgres: $*" >&2; }
    skip() { log "$1"; printf "export HYPEROBF_TEST_PG_SKIP_REASON=%q\n" "$1"; }

    find_bindir() {
        local d
        d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
        if [ -n "$d" ] && [ -x "$d/pg_ctl" ]; then bindir="$d"; return 0; fi
        if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
            bindir="$(dirname "$(command -v pg_ctl)")"; return 0
        fi
        return 1
    }

    if ! find_bindir; then
        if [ "$me" != 0 ]; then skip "PostgreSQL is not installed and this is not root (cannot apt-get install postgresql)"; return 0; fi
        if ! command -v apt-get >/dev/null 2>&1; then skip "PostgreSQL is not installed and apt-get is not available"; return 0; fi
        log "installing postgresql (apt-get)"
        if ! { timeout 300 apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive timeout 600 \
                apt-get install -y -qq --no-install-recommends postgresql >&2; }; then
            skip "apt-get install postgresql failed"; return 0
        fi
        find_bindir || { skip "postgresql installed but pg_ctl/initdb not found"; return 0; }
    fi

    # PostgreSQL refuses to run as root: as root, run the server as the `postgres` user.
    if [ "$me" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres >&2 \
            || { skip "cannot create the postgres system user"; return 0; }
        if command -v runuser >/dev/null 2>&1; then run=(runuser -u postgres --); else run=(su postgres -s /bin/sh -c); fi
    fi
    as_pg() {
        if [ "${#run[@]}" -eq 0 ]; then "$@"
        elif [ "${run[0]}" = runuser ]; then "${run[@]}" "$@"
        else "${run[@]}" "$(printf '%q ' "$@")"; fi
    }

    if [ "${1:-}" = "--stop" ]; then
        if [ -f "$dir/PG_VERSION" ]; then as_pg "$bindir/pg_ctl" -D "$dir" -m fast stop >&2 || true; fi
        return 0
    fi

    mkdir -p "$dir" || { skip "cannot create $dir"; return 0; }
    [ "$me" = 0 ] && chown postgres: "$dir" && chmod 700 "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
        log "initdb $dir"
        as_pg "$bindir/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >/dev/null 2>"$dir.initdb.log" \
            || as_pg "$bindir/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
                -E UTF8 --no-locale >/dev/null 2>>"$dir.initdb.log" \
            || { skip "initdb failed: $(tail -n 1 "$dir.initdb.log" 2>/dev/null)"; return 0; }
    fi
    if ! as_pg "$bindir/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        log "starting PostgreSQL on 127.0.0.1:$port"
        # Durability is irrelevant for a test server: fsync off makes it (and the tests) fast.
        if ! as_pg "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 30 start -o \
                "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
                >/dev/null 2>&1; then
            local why
            why="$(grep -hE 'FATAL|ERROR|could not' "$dir/server.log" 2>/dev/null | tail -n 1 | sed 's/^.*\] //')"
            skip "PostgreSQL did not start on 127.0.0.1:$port: ${why:-see $dir/server.log}"; return 0
        fi
    fi
    psql_su() { as_pg "$bindir/psql" -h "$dir" -p "$port" -U postgres -d postgres -qtAX -v ON_ERROR_STOP=1 "$@"; }
    if [ "$(psql_su -c "SELECT 1 FROM pg_roles WHERE rolname='$user'" 2>/dev/null)" != 1 ]; then
        psql_su -c "CREATE ROLE $user LOGIN CREATEDB PASSWORD '$pw'" >&2 || { skip "cannot create role $user"; return 0; }
    fi
    if [ "$(psql_su -c "SELECT 1 FROM pg_database WHERE datname='$db'" 2>/dev/null)" != 1 ]; then
        psql_su -c "CREATE DATABASE $db OWNER $user" >&2 || { skip "cannot create database $db"; return 0; }
    fi
    if ! PGPASSWORD="$pw" PGCONNECT_TIMEOUT=5 "$bindir/psql" -h 127.0.0.1 -p "$port" -U "$user" -d "$db" -qtAX \
            -c "SELECT 1" >/dev/null 2>&1; then
        skip "PostgreSQL is running but $user@127.0.0.1:$port/$db does not accept the test login"; return 0
    fi
    log "ready: $user@127.0.0.1:$port/$db"
    echo "export HYPEROBF_TEST_PG_URL=postgresql+psycopg://$user:$pw@127.0.0.1:$port/$db"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # sourced: export into the caller's shell (and never exit it)
    eval "$(_hyperobf_pg_main "$@")"
else
    _hyperobf_pg_main "$@"
    exit 0
fi
