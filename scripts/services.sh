#!/usr/bin/env bash
# PostgreSQL and Redis on loopback for `make test-services`.
#
# Running already: does nothing (it only checks). Installed but stopped: starts them.
# Missing: installs them with apt-get, then starts them. Then waits until both answer and
# makes sure the test role can log in over TCP without a password and may create databases
# (the test run creates its test_messaging database itself, so no database is made here).
# Safe to run any number of times.
#
# Overridable: PG_HOST PG_PORT PG_USER REDIS_HOST REDIS_PORT WAIT_SECONDS.
set -euo pipefail

PG_HOST="${PG_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5432}"
PG_USER="${PG_USER:-postgres}"
REDIS_HOST="${REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6379}"
WAIT_SECONDS="${WAIT_SECONDS:-60}"

say() { printf '[services] %s\n' "$*"; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# Root runs admin commands directly; anyone else needs sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif have sudo; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}
as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"
  elif [ "$(id -u)" -eq 0 ] && have runuser; then runuser -u postgres -- "$@"
  elif have sudo; then sudo -u postgres "$@"
  else die "need root (or sudo) to run as postgres: $*"
  fi
}

pg_up() { have pg_isready && pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
redis_up() { have redis-cli && [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

wait_for() {  # wait_for NAME CHECK
  local name=$1 check=$2 waited=0
  until "$check"; do
    if [ "$waited" -ge "$WAIT_SECONDS" ]; then
      die "$name did not answer within ${WAIT_SECONDS}s"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  say "$name answers."
}

install_missing() {
  local packages=()
  if pg_up; then :; elif ! have pg_ctlcluster; then packages+=(postgresql); fi
  if redis_up; then :; elif ! have redis-server; then packages+=(redis-server); fi
  if [ "${#packages[@]}" -gt 0 ]; then
    say "installing ${packages[*]} (apt-get)"
    have apt-get || die "${packages[*]} missing and apt-get is not available; install them by hand"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"
  fi
}

pg_version() {  # the newest installed cluster version
  { ls /etc/postgresql 2>/dev/null || true; } | sort -V | tail -n 1
}

start_postgres() {
  if pg_up; then
    say "PostgreSQL is running on $PG_HOST:$PG_PORT."
    return
  fi
  local version
  version="$(pg_version)"
  if [ -z "$version" ] || [ ! -d "/etc/postgresql/$version/main" ]; then
    version="${version:-$({ ls /usr/lib/postgresql 2>/dev/null || true; } | sort -V | tail -n 1)}"
    [ -n "$version" ] || die "PostgreSQL is not installed (no /usr/lib/postgresql/<version>)"
    say "creating PostgreSQL $version cluster main"
    as_root pg_createcluster "$version" main --port "$PG_PORT"
  fi
  say "starting PostgreSQL $version cluster main"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for PostgreSQL pg_up
}

start_redis() {
  if redis_up; then
    say "Redis is running on $REDIS_HOST:$REDIS_PORT."
    return
  fi
  say "starting Redis on $REDIS_HOST:$REDIS_PORT"
  as_root mkdir -p /var/lib/redis /var/log/redis
  local args=(--daemonize yes --port "$REDIS_PORT" --save "" --appendonly no
    --dir /var/lib/redis --logfile /var/log/redis/ci.log)
  # "-::1": IPv6 loopback if the host has it (Redis 7); older Redis gets IPv4 loopback only.
  as_root redis-server "${args[@]}" --bind "$REDIS_HOST" -::1 \
    || as_root redis-server "${args[@]}" --bind "$REDIS_HOST"
  wait_for Redis redis_up
}

psql_tcp() {  # psql_tcp SQL: as PG_USER over TCP, never prompting for a password
  psql -X -w -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -Atc "$1" 2>/dev/null
}

trust_loopback() {
  local hba
  hba="$(as_postgres psql -X -Atc 'SHOW hba_file')"
  if as_root grep -Eq "^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust" "$hba"; then
    return
  fi
  say "allowing password-less (trust) connections from loopback in $hba"
  as_root sed -i "1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust" "$hba"
  as_postgres psql -X -q -c 'SELECT pg_reload_conf()' >/dev/null
}

ensure_role() {
  if ! psql_tcp 'SELECT 1' >/dev/null; then
    # A fresh install: the role may be missing, and loopback asks for a password.
    if [ -z "$(as_postgres psql -X -Atc "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" ]; then
      say "creating role $PG_USER"
      as_postgres psql -X -q -c "CREATE ROLE \"$PG_USER\" LOGIN CREATEDB"
    fi
    trust_loopback
    local waited=0
    until psql_tcp 'SELECT 1' >/dev/null; do
      [ "$waited" -lt 10 ] || die "cannot connect to PostgreSQL as $PG_USER on $PG_HOST:$PG_PORT without a password"
      sleep 1
      waited=$((waited + 1))
    done
  fi
  if [ "$(psql_tcp "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")" != t ]; then
    say "granting CREATEDB to $PG_USER"
    as_postgres psql -X -q -c "ALTER ROLE \"$PG_USER\" CREATEDB"
  fi
  say "PostgreSQL role $PG_USER can log in from loopback and create databases."
}

install_missing
start_postgres
start_redis
ensure_role
