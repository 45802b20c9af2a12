#!/usr/bin/env bash
# Smoke test of the container image: three nodes from the image, in cluster mode on a
# PostgreSQL and a Redis the host runs, each with its data directory as a volume.
#
#   bash deploy/smoke.sh            (after `podman build -f deploy/Containerfile -t tollgate:local .`)
#
# Checks: the process runs as uid 65532, each node turns ready on its status listener, an
# Admin API write on node 1 is served by nodes 2 and 3, and each node wrote its sealed copy of
# the configuration to its volume. The containers use the host's network (ports 18100-18302)
# so they reach the host's stores on 127.0.0.1.
#
# Environment: ENGINE (podman or docker; default: podman if present), IMAGE (tollgate:local),
# PG (conninfo; default host=127.0.0.1 user=postgres dbname=tollgate_smoke, created if
# missing), RUN_FLAGS (extra `run` flags the machine needs).
set -euo pipefail

ENGINE=${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
IMAGE=${IMAGE:-tollgate:local}
DB=tollgate_smoke
PG=${PG:-host=127.0.0.1 user=postgres dbname=$DB}
read -r -a EXTRA <<< "${RUN_FLAGS:-}"
TOKEN=smoke-admin-token
KEY=$(head -c 32 /dev/urandom | base64)
NAMES=(tollgate-smoke-1 tollgate-smoke-2 tollgate-smoke-3)
WORK=$(mktemp -d)

cleanup() {
  for n in "${NAMES[@]}"; do "$ENGINE" rm -f "$n" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ "$PG" == *"dbname=$DB"* ]]; then
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB" postgres
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" postgres
fi

cat > "$WORK/kong.yaml" <<'EOF'
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:9
    routes: [{name: seeded, paths: ["/seeded"]}]
EOF

# admin port, proxy port, status port of node i (1-based)
ports() { echo "$((18000 + $1)) $((18100 + $1)) $((18200 + $1))"; }

for i in 1 2 3; do
  read -r admin proxy status < <(ports "$i")
  mkdir -p "$WORK/data$i" && chmod 777 "$WORK/data$i"
  "$ENGINE" run -d --name "${NAMES[$((i - 1))]}" --network host "${EXTRA[@]}" \
    -v "$WORK/kong.yaml:/etc/tollgate/kong.yaml:ro" -v "$WORK/data$i:/var/lib/tollgate" \
    -e TOLLGATE_STORE=postgres -e "TOLLGATE_STORE_POSTGRES=$PG" -e "TOLLGATE_STORE_KEY=$KEY" \
    -e TOLLGATE_CONFIG=/etc/tollgate/kong.yaml -e "TOLLGATE_ADMIN_TOKEN=$TOKEN" \
    -e "TOLLGATE_PROXY_LISTEN=127.0.0.1:$proxy" -e TOLLGATE_PROXY_TLS_LISTEN=off \
    -e "TOLLGATE_ADMIN_LISTEN=127.0.0.1:$admin" -e "TOLLGATE_STATUS_LISTEN=127.0.0.1:$status" \
    -e TOLLGATE_ANALYTICS=off "$IMAGE" >/dev/null
done

fail() { echo "FAIL: $*" >&2; "$ENGINE" logs "${NAMES[0]}" 2>&1 | tail -20 >&2; exit 1; }

# Ready within 30 s on each node.
for i in 1 2 3; do
  read -r _ _ status < <(ports "$i")
  for _ in $(seq 300); do
    curl -fsS "http://127.0.0.1:$status/status/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$status/status/ready" >/dev/null || fail "node $i not ready"
done
echo "PASS: three nodes ready on their status listeners"

pid=$("$ENGINE" inspect -f '{{.State.Pid}}' "${NAMES[0]}")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[[ "$uid" == 65532 ]] || fail "runs as uid '$uid', not 65532"
echo "PASS: runs as uid 65532"

read -r admin1 _ _ < <(ports 1)
curl -fsS -X POST -H "Kong-Admin-Token: $TOKEN" "http://127.0.0.1:$admin1/services/echo/routes" \
  -d name=added -d paths[]=/added >/dev/null || fail "admin write on node 1"
for i in 2 3; do
  read -r admin _ _ < <(ports "$i")
  for _ in $(seq 50); do
    curl -fsS -H "Kong-Admin-Token: $TOKEN" "http://127.0.0.1:$admin/routes/added" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS -H "Kong-Admin-Token: $TOKEN" "http://127.0.0.1:$admin/routes/added" >/dev/null \
    || fail "node $i did not get the write within 5 s"
done
echo "PASS: a write on node 1 is served by nodes 2 and 3"

for i in 1 2 3; do
  [[ -s "$WORK/data$i/cluster-config.yaml" ]] || fail "node $i wrote no cached configuration"
done
echo "PASS: each node cached the configuration in its volume"
