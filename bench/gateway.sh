#!/usr/bin/env bash
# The gateway's cost. oha sends one tools/call, first straight to a minimal MCP
# server that takes one static token (examples/mcp_upstream.rs), then the same
# load through `mayfly gateway`: the token checked (JWKS, claims, revocation
# rules), the resource's tool policy judged, the static credential injected,
# and one mcp.request audit event per call delivered to mayfly. Then how fast
# mayfly took the events: every call's event counted in the store.
source "$(dirname "$0")/lib.sh"
bench_setup
(cd "$ROOT" && cargo build --release --locked --example mcp_upstream 2>/dev/null)
UPSTREAM_BIN="$ROOT/target/release/examples/mcp_upstream"
GW_RESOURCE=https://mcp.demo.test/bench-gateway
UP=http://127.0.0.1:18700/mcp
GW=http://127.0.0.1:18800/mcp
PAT=bench-static-pat-0123456789
CALL='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"bench"}}}'
MCP_HEADERS=(-m POST -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' -d "$CALL")

# events: mcp.request events recorded in the current store.
events() {
  case $URL in
    sqlite://*) python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from audit_events where action = ?", ("mcp.request",)).fetchone()[0])' "${URL#sqlite://}" ;;
    *) psql "$PG" -At -c "SELECT count(*) FROM $SCHEMA.audit_events WHERE action = 'mcp.request'" ;;
  esac
}

# scalar SQL: one number from the current store.
scalar() {
  case $URL in
    sqlite://*) python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "${URL#sqlite://}" "$1" ;;
    *) psql "$PG" -At -c "SET search_path = $SCHEMA; $1" | tail -1 ;;
  esac
}

echo "## gateway: tools/call straight to the upstream, and through \`mayfly gateway\` with audit on (oha -c $CONNECTIONS -z $DURATION)"
table_header
MCP_UPSTREAM_LISTEN=127.0.0.1:18700 MCP_UPSTREAM_TOKEN=$PAT "$UPSTREAM_BIN" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!
trap 'kill $UP_PID ${GW_PID:-} 2>/dev/null || true; bench_cleanup' EXIT
for _ in $(seq 1 50); do curl -s -o /dev/null "$UP" && break; sleep 0.1; done
# What the gateway adds to one call, below saturation: the same fixed rate both ways.
RATE=${GATEWAY_RATE:-2000}
LOAD_PID=$UP_PID load "tools/call straight to the upstream (static token)" -H "Authorization: Bearer $PAT" "${MCP_HEADERS[@]}" "$UP"
LOAD_PID=$UP_PID load "… at a fixed $RATE/s" -q "$RATE" -H "Authorization: Bearer $PAT" "${MCP_HEADERS[@]}" "$UP"
notes=()
for backend in ${GATEWAY_BACKENDS:-postgres sqlite}; do
  mayfly_start "$backend"
  resource_server
  api /v1/tenants/demo/resources "{\"uri\":\"$GW_RESOURCE\",\"scopes\":[\"tools:read\"],\"tools\":{\"echo\":{\"scopes\":[\"tools:read\"]}}}" >/dev/null
  secret=$(api /v1/tenants/demo/clients "{\"client_id\":\"bench-agent\",\"kind\":\"agent\",\"workflows\":[\"bench\"],\"max_ttl_seconds\":900,\"grants\":[{\"resource\":\"$GW_RESOURCE\",\"scopes\":[\"tools:read\"]}]}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
  token=$(curl -sf -u "bench-agent:$secret" -d grant_type=client_credentials -d "resource=$GW_RESOURCE" -d expires_in=900 "$BASE/oauth2/token" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  printf '%s\n' "$PAT" >"$WORK/pat"
  MAYFLY_CLIENT_ID=bench-rs MAYFLY_CLIENT_SECRET=$RS_SECRET RUST_LOG=warn "$BIN" gateway --listen 127.0.0.1:18800 \
    --issuer "$BASE" --resource "$GW_RESOURCE" --path /mcp --upstream "$UP" --upstream-credential-file "$WORK/pat" \
    >"$WORK/gateway.log" 2>&1 &
  GW_PID=$!
  for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18800/readyz >/dev/null && break; sleep 0.1; done
  # The load is what it claims: the call succeeds through the gateway, and a token it does not allow is refused.
  curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' -H 'accept: application/json' -d "$CALL" "$GW" | grep -q '"text":"ok"' ||
    { echo "a tools/call through the gateway did not succeed" >&2; cat "$WORK/gateway.log" >&2; exit 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer x' -d "$CALL" "$GW")" = 401 ] ||
    { echo "the gateway let a bad token through" >&2; exit 1; }
  LOAD_PID=$GW_PID load "through the gateway at a fixed $RATE/s, audit to $backend" -q "$RATE" -H "Authorization: Bearer $token" "${MCP_HEADERS[@]}" "$GW"
  sleep 2 # the fixed-rate run's events reach mayfly before the count starts
  before=$(events)
  start=$(date +%s.%N)
  LOAD_PID=$GW_PID load "tools/call through the gateway, audit to $backend" -H "Authorization: Bearer $token" "${MCP_HEADERS[@]}" "$GW"
  # Until every event has reached mayfly: the count stops growing and the gateway's queue is empty.
  last=-1
  while :; do
    now=$(events)
    queue=$(curl -s http://127.0.0.1:18800/metrics | awk '/^mayfly_gateway_audit_queue /{print $2}')
    [ "$now" = "$last" ] && [ "${queue:-0}" = 0 ] && break
    last=$now
    sleep 1
  done
  took=$(python3 -c "print(f'{float(\"$(date +%s.%N)\") - $start - 1:.1f}')")
  n=$((now - before))
  # Until the transparency log has integrated every event: a signed checkpoint covers them all.
  total=$(scalar "SELECT count(*) FROM audit_events WHERE prev_hash = ''")
  while [ "$(scalar 'SELECT size FROM audit_log')" -lt "$total" ]; do sleep 0.2; done
  logged=$(python3 -c "print(f'{float(\"$(date +%s.%N)\") - $start:.1f}')")
  heads=$(scalar 'SELECT count(*) FROM audit_tree_heads')
  notes+=("$backend: $n mcp.request events recorded in ${took} s from the start of the load ($(python3 -c "print(f'{$n / $took:,.0f}')")/s ingested); all $total events in the signed log ${logged} s from the start, under $heads signed checkpoints")
  kill "$GW_PID" 2>/dev/null || true
  wait "$GW_PID" 2>/dev/null || true
  GW_PID=
  mayfly_stop
done
echo
printf -- '- %s\n' "${notes[@]}"
