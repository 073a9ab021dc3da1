#!/usr/bin/env bash
# Introspection over many distinct tokens: 20,000 minted first, then a
# resource_server client introspects them (oha -Z takes a line of the file at
# random for each request), so the working set is 20,000 distinct leases.
source "$(dirname "$0")/lib.sh"
bench_setup
TOKENS=${BENCH_TOKENS:-20000}
echo "## introspection of $TOKENS distinct tokens (oha -c $CONNECTIONS -z $DURATION)"
table_header
for backend in $BACKENDS; do
  introspectable "$backend"
  load "introspect, $backend" -m POST -H "Authorization: $RS_AUTH" \
    -H 'content-type: application/x-www-form-urlencoded' -Z "$WORK/tokens" "$BASE/oauth2/introspect"
  mayfly_stop
done
