#!/usr/bin/env bash
# `mayfly audit verify` over a log grown by mints on Postgres (BENCH_ROUNDS rounds of
# oha -c 64 -z 10s): every event hash recomputed, the tree rebuilt, every
# signed checkpoint checked. Prints the events verified per second.
source "$(dirname "$0")/lib.sh"
echo "## audit verify (Postgres)"
bench_setup
mayfly_start postgres
for _ in $(seq 1 "${BENCH_ROUNDS:-3}"); do oha -c 64 -z 10s --no-tui -m POST -H "Authorization: $DEMO_AUTH" -H 'content-type: application/x-www-form-urlencoded' -d "$MINT_BODY" "$BASE/oauth2/token" > "$WORK/oha.out"; done
sleep 2
mayfly_stop
n=$(psql "$PG" -At -c "SELECT size FROM $SCHEMA.audit_log")
h=$(psql "$PG" -At -c "SELECT count(*) FROM $SCHEMA.audit_tree_heads")
start=$(date +%s.%N)
MAYFLY_DATABASE_URL="$URL" "$BIN" audit verify > "$WORK/verify.json" 2>/dev/null
end=$(date +%s.%N)
python3 -c "import json;r=json.load(open('$WORK/verify.json'));print(f'audit verify: ok={r[\"ok\"]} over {r[\"log_size\"]:,} logged events ($n) and $h signed checkpoints in {$end-$start:.1f} s ({r[\"log_size\"]/($end-$start):,.0f} events/s)')"
