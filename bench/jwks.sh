#!/usr/bin/env bash
# The JWKS document MCP servers verify offline against (served from memory).
source "$(dirname "$0")/lib.sh"
bench_setup
echo "## JWKS (oha -c $CONNECTIONS -z $DURATION)"
table_header
for backend in $BACKENDS; do
  mayfly_start "$backend"
  load "jwks, $backend" "$BASE/.well-known/jwks.json"
  mayfly_stop
done
