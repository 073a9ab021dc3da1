#!/usr/bin/env bash
# A mixed load: introspection, mints and admin reads at once, from three oha
# processes whose connections are split 50 / 14 / 1 (near 90 / 9 / 1 by requests). oha cannot mix
# requests in one run, so the mix is set by connections: each line shows what
# its share achieved, and the total shows the achieved mix.
source "$(dirname "$0")/lib.sh"
bench_setup
TOKENS=${BENCH_TOKENS:-20000}
echo "## mixed: introspection, mint, admin list (oha, 50 + 14 + 1 connections, $DURATION)"
table_header
for backend in $BACKENDS; do
  introspectable "$backend"
  CONNECTIONS=50 load "mixed: introspect, $backend" -m POST -H "Authorization: $RS_AUTH" \
    -H 'content-type: application/x-www-form-urlencoded' -Z "$WORK/tokens" "$BASE/oauth2/introspect" >"$WORK/m1" &
  p1=$!
  CONNECTIONS=14 load "mixed: mint, $backend" -m POST -H "Authorization: $DEMO_AUTH" \
    -H 'content-type: application/x-www-form-urlencoded' -d "$MINT_BODY" "$BASE/oauth2/token" >"$WORK/m2" &
  p2=$!
  CONNECTIONS=1 load "mixed: admin GET clients, $backend" -H "Authorization: Bearer $ADMIN" \
    "$BASE/v1/tenants/demo/clients" >"$WORK/m3" &
  p3=$!
  wait $p1 $p2 $p3
  cat "$WORK/m1" "$WORK/m2" "$WORK/m3"
  python3 - "$WORK/m1" "$WORK/m2" "$WORK/m3" <<'PY'
import sys
rates = [float(open(p).read().split("|")[2].split()[0].rstrip("/s").replace(",", "")) for p in sys.argv[1:]]
total = sum(rates)
print(f"| mixed total | {total:,.0f}/s | | | mix {' / '.join(f'{100 * r / total:.1f}%' for r in rates)} | |")
PY
  mayfly_stop
done
