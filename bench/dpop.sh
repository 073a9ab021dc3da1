#!/usr/bin/env bash
# What a DPoP proof costs a mint: the same load generator (examples/mint_load.rs)
# mints for the demo CI client without a proof, then with a fresh ES256 proof on
# every request (made before the clock starts, so the generator does the same
# work per request both ways). The proof is verified, its jti spent in the
# database (used_assertions), and the token bound (cnf.jkt, the lease's jkt).
source "$(dirname "$0")/lib.sh"
bench_setup
(cd "$ROOT" && cargo build --release --locked --example mint_load 2>/dev/null)
LOADGEN="$ROOT/target/release/examples/mint_load"
SECONDS_=${DURATION%s}
echo "## mint with and without DPoP (mint_load -c $CONNECTIONS, ${SECONDS_} s each, median of ${BENCH_RUNS:-1})"
echo "| backend | scenario | throughput | p50 | p99 | status codes |"
echo "|---|---|---|---|---|---|"
for backend in ${DPOP_BACKENDS:-postgres sqlite}; do
  mayfly_start "$backend"
  # The load is what it claims: a proof binds the token.
  proof_check=$("$LOADGEN" "$BASE" "$DEMO_AUTH" "$MINT_BODY" --dpop --seconds 1 --connections 1)
  echo "$proof_check" | grep -q ' 200×' || { echo "a DPoP mint did not succeed: $proof_check" >&2; exit 1; }
  for mode in "" --dpop; do
    rows=()
    for _ in $(seq 1 "${BENCH_RUNS:-1}"); do
      rows+=("$("$LOADGEN" "$BASE" "$DEMO_AUTH" "$MINT_BODY" $mode --seconds "$SECONDS_" --connections "$CONNECTIONS")")
    done
    # The median run's row (its p50, p99 and status codes), its throughput with the lowest and highest run.
    printf '%s\n' "${rows[@]}" | python3 -c '
import statistics, sys
backend, rows = sys.argv[1], [l.rstrip("\n") for l in sys.stdin if l.strip()]
rate = lambda r: float(r.split("|")[2].strip().removesuffix("/s"))
rows.sort(key=rate)
cells = rows[(len(rows) - 1) // 2].split("|")
if len(rows) > 1:
    cells[2] = f" {statistics.median(map(rate, rows)):,.0f}/s ({rate(rows[0]):,.0f}–{rate(rows[-1]):,.0f}, {len(rows)} runs) "
print(f"| {backend}" + "|".join(cells[1:]).rstrip())' "$backend"
  done
  bound=$(curl -sf -H "Authorization: Bearer $ADMIN" "$BASE/v1/tenants/demo/leases?limit=1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["jkt"] is not None)')
  [ "$bound" = True ] || { echo "the last lease is not DPoP-bound" >&2; exit 1; }
  mayfly_stop
done
