#!/usr/bin/env bash
# Mint throughput: client_credentials for the demo CI client, lease and audit
# event durable before each answer. One fresh store per backend.
source "$(dirname "$0")/lib.sh"
bench_setup
echo "## mint (oha -c $CONNECTIONS -z $DURATION)"
table_header
for backend in $BACKENDS; do
  mayfly_start "$backend"
  load "mint, $backend" -m POST -H "Authorization: $DEMO_AUTH" \
    -H 'content-type: application/x-www-form-urlencoded' -d "$MINT_BODY" "$BASE/oauth2/token"
  mayfly_stop
done
