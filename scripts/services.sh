#!/usr/bin/env bash
# The local services the tests use, on their standard ports: Redis (127.0.0.1:6379) and
# PostgreSQL (127.0.0.1:5432, trust auth) with the pgvector extension available. Starts what
# is not running and installs pgvector when the server lacks it (as root, from Debian's
# packages: postgresql-NN-pgvector where the release has it, else built from Debian's source
# package against postgresql-server-dev-NN).
set -euo pipefail

say() { echo "services: $*"; }

pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if ! redis_ready; then
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis_ready && break; sleep 0.1; done
  redis_ready || { say "Redis did not start (see /var/log/redis/ci.log)" >&2; exit 1; }
fi

if ! pg_ready; then
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 100); do pg_ready && break; sleep 0.1; done
  pg_ready || { say "PostgreSQL did not start" >&2; exit 1; }
fi

pgvector_available() {
  [ "$(psql -h 127.0.0.1 -U postgres -d postgres -Atc \
    "select count(*) from pg_available_extensions where name = 'vector'" 2>/dev/null)" = "1" ]
}

if ! pgvector_available; then
  major="$(psql -h 127.0.0.1 -U postgres -d postgres -Atc 'show server_version_num' | cut -c1-2)"
  say "installing pgvector for PostgreSQL $major"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q "postgresql-$major-pgvector" >/dev/null 2>&1; then
    # Debian bookworm packages no pgvector; trixie's source package builds against 15.
    work="$(mktemp -d)"
    chmod 755 "$work" # apt downloads as _apt
    lists="$work/lists"
    mkdir -p "$lists/partial"
    echo "deb-src http://deb.debian.org/debian trixie main" >"$work/sources.list"
    apt_src=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
      -o "Dir::State::Lists=$lists")
    apt-get install -y -q "postgresql-server-dev-$major" make gcc >/dev/null
    apt-get "${apt_src[@]}" update -q >/dev/null
    (cd "$work" && apt-get "${apt_src[@]}" source --download-only -q pgvector >/dev/null)
    tar -xzf "$work"/pgvector_*.orig.tar.gz -C "$work"
    make -C "$work"/pgvector-*/ -j2 PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" \
      OPTFLAGS="" >/dev/null
    make -C "$work"/pgvector-*/ install PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" \
      >/dev/null
    rm -rf "$work"
  fi
  pgvector_available || { say "pgvector is still not available" >&2; exit 1; }
fi
say "Redis and PostgreSQL (with pgvector) are up"
