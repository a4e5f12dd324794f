#!/usr/bin/env bash
# Makes PostgreSQL and Redis reachable for Waypoint's dev run and tests.
#
# Uses the servers already listening on WAYPOINT_PG_HOST:WAYPOINT_PG_PORT (default 127.0.0.1:5432)
# and WAYPOINT_REDIS_HOST:WAYPOINT_REDIS_PORT (default 127.0.0.1:6379). When one is not
# reachable it starts an installed server, and installs it with the system package manager
# (apt-get, dnf, apk or brew) when it is absent. A PostgreSQL cluster this script installs is
# set to trust connections from localhost, which is what the tests and the dev run expect.
set -euo pipefail

PG_HOST=${WAYPOINT_PG_HOST:-127.0.0.1}
PG_PORT=${WAYPOINT_PG_PORT:-5432}
REDIS_HOST=${WAYPOINT_REDIS_HOST:-127.0.0.1}
REDIS_PORT=${WAYPOINT_REDIS_PORT:-6379}

log() { printf 'services: %s\n' "$*" >&2; }

reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() { # host port name
  for _ in $(seq 1 60); do
    reachable "$1" "$2" && return 0
    sleep 1
  done
  log "$3 did not come up on $1:$2"
  return 1
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else log "need root to run: $*"; return 1
  fi
}

install_packages() { # debian-names... (mapped per package manager below)
  if command -v apt-get >/dev/null 2>&1; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  elif command -v dnf >/dev/null 2>&1; then
    local pkgs=()
    for p in "$@"; do case $p in postgresql) pkgs+=(postgresql-server postgresql) ;; redis-server) pkgs+=(redis) ;; *) pkgs+=("$p") ;; esac; done
    as_root dnf install -y -q "${pkgs[@]}"
  elif command -v apk >/dev/null 2>&1; then
    local pkgs=()
    for p in "$@"; do case $p in redis-server) pkgs+=(redis) ;; *) pkgs+=("$p") ;; esac; done
    as_root apk add --quiet "${pkgs[@]}"
  elif command -v brew >/dev/null 2>&1; then
    for p in "$@"; do case $p in postgresql) brew install postgresql@17 ;; redis-server) brew install redis ;; *) brew install "$p" ;; esac; done
  else
    log "no supported package manager (apt-get, dnf, apk, brew) to install: $*"
    return 1
  fi
}

start_postgres() {
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    if [ -z "$version" ]; then
      as_root pg_createcluster --start "$(ls /usr/lib/postgresql | sort -V | tail -n 1)" main
      version=$(ls /etc/postgresql | sort -V | tail -n 1)
    fi
    trust_localhost "/etc/postgresql/$version/main/pg_hba.conf"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  elif command -v brew >/dev/null 2>&1; then
    brew services start postgresql@17
  elif command -v postgresql-setup >/dev/null 2>&1; then
    as_root postgresql-setup --initdb || true
    trust_localhost /var/lib/pgsql/data/pg_hba.conf
    as_root systemctl start postgresql
  else
    local data=${PGDATA:-/var/lib/postgresql/waypoint}
    local bin
    bin=$(dirname "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
    as_root mkdir -p "$data" /run/postgresql
    as_root chown postgres "$data" /run/postgresql
    [ -f "$data/PG_VERSION" ] || as_root su postgres -c "$bin/initdb -D $data --auth=trust -U postgres"
    as_root su postgres -c "$bin/pg_ctl -D $data -l $data/server.log -o '-p $PG_PORT -k /run/postgresql' start"
  fi
}

# A cluster installed here for development trusts connections from this machine only.
trust_localhost() {
  local hba=$1
  [ -f "$hba" ] || return 0
  if ! as_root grep -q '^# waypoint: trust localhost' "$hba"; then
    as_root sh -c "printf '%s\n' '# waypoint: trust localhost' \
      'host all all 127.0.0.1/32 trust' 'host all all ::1/128 trust' \
      'local all all trust' | cat - '$hba' > '$hba.new' && mv '$hba.new' '$hba'"
  fi
}

ensure_postgres() {
  if reachable "$PG_HOST" "$PG_PORT"; then
    log "postgresql is reachable on $PG_HOST:$PG_PORT"
    return
  fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1 \
    && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    log "installing postgresql"
    install_packages postgresql
  fi
  log "starting postgresql"
  start_postgres
  wait_for "$PG_HOST" "$PG_PORT" postgresql
}

ensure_redis() {
  if reachable "$REDIS_HOST" "$REDIS_PORT"; then
    log "redis is reachable on $REDIS_HOST:$REDIS_PORT"
    return
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis"
    install_packages redis-server
  fi
  log "starting redis"
  local dir=${TMPDIR:-/tmp}/waypoint-redis
  mkdir -p "$dir"
  redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" \
    --appendonly no --dir "$dir" --logfile "$dir/redis.log"
  wait_for "$REDIS_HOST" "$REDIS_PORT" redis
}

ensure_postgres
ensure_redis
