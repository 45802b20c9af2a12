#!/usr/bin/env bash
# The local services the tests use, on their standard ports: Redis (127.0.0.1:6379) and
# PostgreSQL (127.0.0.1:5432, trust auth) with the pgvector extension available. On a machine
# without them, installs both from Debian's packages (as root: redis-server, postgresql),
# creates a PostgreSQL cluster when none exists and lets 127.0.0.1 in without a password;
# then starts what is not running and installs pgvector when the server lacks it (from
# Debian's packages: postgresql-NN-pgvector where the release has it, else built from
# Debian's source package against postgresql-server-dev-NN). Where everything is installed
# and running, it changes nothing.
set -euo pipefail

say() { echo "services: $*"; }

pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }
# The newest PostgreSQL server installed (its major version), empty when none is.
pg_installed() { ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1; }

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
if [ -z "$(pg_installed)" ] || ! command -v pg_ctlcluster >/dev/null || ! command -v psql >/dev/null; then
  missing+=(postgresql)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { say "${missing[*]} missing; run as root to install them" >&2; exit 1; }
  say "installing ${missing[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! redis_ready; then
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis_ready && break; sleep 0.1; done
  redis_ready || { say "Redis did not start (see /var/log/redis/ci.log)" >&2; exit 1; }
fi

# The cluster listening on 5432 ("version name"), empty when there is none.
pg_cluster() { pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 { print $1, $2; exit }'; }
# The tests connect over TCP as postgres without a password.
pg_trusted() { psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -w -Atc 'select 1' >/dev/null 2>&1; }

# The cluster on 5432 as "version name", or an error.
pg_cluster_or_die() {
  local c
  c="$(pg_cluster)"
  [ -n "$c" ] || { say "no PostgreSQL cluster uses port 5432 (see pg_lsclusters)" >&2; exit 1; }
  echo "$c"
}

if ! pg_ready; then
  if [ -z "$(pg_cluster)" ] && [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    # The package creates one unless postgresql-common was told not to.
    say "creating the PostgreSQL cluster $(pg_installed)/main on port 5432"
    pg_createcluster --port 5432 "$(pg_installed)" main >/dev/null
  fi
  cluster="$(pg_cluster_or_die)"
  read -r pg_version pg_name <<<"$cluster"
  say "starting PostgreSQL $pg_version/$pg_name"
  pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$pg_name" start
  for _ in $(seq 100); do pg_ready && break; sleep 0.1; done
  pg_ready || { say "PostgreSQL did not start" >&2; exit 1; }
fi

if ! pg_trusted; then
  # Debian's default asks TCP clients for a password: trust the loopback addresses only,
  # ahead of the other rules.
  cluster="$(pg_cluster_or_die)"
  read -r pg_version pg_name <<<"$cluster"
  hba="/etc/postgresql/$pg_version/$pg_name/pg_hba.conf"
  say "trusting 127.0.0.1 and ::1 in $hba"
  { printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'; cat "$hba"; } >"$hba.new"
  chown --reference="$hba" "$hba.new"
  chmod --reference="$hba" "$hba.new"
  mv "$hba.new" "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$pg_name" reload
  for _ in $(seq 50); do pg_trusted && break; sleep 0.1; done
  pg_trusted || { say "PostgreSQL still asks 127.0.0.1 for a password (see $hba)" >&2; exit 1; }
fi

pgvector_available() {
  [ "$(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atc \
    "select count(*) from pg_available_extensions where name = 'vector'" 2>/dev/null)" = "1" ]
}

if ! pgvector_available; then
  major="$(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atc 'show server_version_num' | cut -c1-2)"
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
