# Shared by the bench/ scripts: start the release binary on a backend, seed
# it through the admin API, drive load with oha from a separate process, and
# print throughput, p50, p99, status codes and mayfly's peak RSS.
# Everything talks to 127.0.0.1 only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${MAYFLY_BIN:-$ROOT/target/release/mayfly}"
PG="${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
DURATION="${BENCH_DURATION:-10s}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
# Which backends to run: sqlite, postgres (sslmode=disable), postgres-tls (sqlx's default, prefer).
BACKENDS="${BENCH_BACKENDS:-sqlite postgres postgres-tls}"
ADMIN_SECRET=mfy_cs_bench-admin-secret-0123456789abcdef0123
RESOURCE=https://mcp.demo.test/github

bench_setup() {
  command -v oha >/dev/null || cargo install oha --locked
  [ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --locked --bin mayfly)
  WORK=$(mktemp -d)
  SCHEMAS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  [ -n "${MAYFLY_PID:-}" ] && kill "$MAYFLY_PID" 2>/dev/null || true
  for s in "${SCHEMAS[@]:-}"; do
    [ -n "$s" ] && psql "$PG" -q -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $s CASCADE" || true
  done
  rm -rf "$WORK"
}

# bench_url BACKEND: sets URL to a fresh store of that backend (SCHEMA: its Postgres schema), or to BACKEND itself when it is a URL.
bench_url() {
  case $1 in
    sqlite) URL="sqlite://$WORK/$RANDOM$RANDOM/mayfly.db" ;;
    postgres://*) URL="$1" ;; # a store of the script's own (bench/ha.sh)
    postgres | postgres-tls)
      SCHEMA=bench_$RANDOM$RANDOM
      psql "$PG" -q -c "CREATE SCHEMA $SCHEMA"
      SCHEMAS+=("$SCHEMA")
      local ssl="&sslmode=disable"
      [ "$1" = postgres-tls ] && ssl=""
      URL="$PG?options[search_path]=$SCHEMA$ssl" ;;
  esac
}

# mayfly_start BACKEND [PORT]: runs the release binary with the demo tenant;
# sets BASE, MAYFLY_PID, DEMO_AUTH (Basic credentials of the demo CI client).
mayfly_start() {
  local port=${2:-18600}
  bench_url "$1"
  BASE=http://127.0.0.1:$port
  MAYFLY_LISTEN=127.0.0.1:$port MAYFLY_DATABASE_URL="$URL" MAYFLY_ISSUER="$BASE" \
    MAYFLY_MASTER_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY= \
    MAYFLY_BOOTSTRAP_ADMIN_SECRET=$ADMIN_SECRET RUST_LOG=warn \
    "$BIN" --dev >"$WORK/mayfly-$port.log" 2>&1 &
  MAYFLY_PID=$!
  for _ in $(seq 1 100); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.1; done
  local secret
  secret=$(grep -o "demo-ci:mfy_cs_[A-Za-z0-9_-]*" "$WORK/mayfly-$port.log" | head -1 | cut -d: -f2)
  DEMO_AUTH="Basic $(printf 'demo-ci:%s' "$secret" | base64 -w0)"
  ADMIN=$(curl -sf -u "mayfly-admin:$ADMIN_SECRET" -d grant_type=client_credentials -d "resource=$BASE" \
    -d scope=mayfly:admin "$BASE/oauth2/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
}

mayfly_stop() {
  kill "$MAYFLY_PID" 2>/dev/null || true
  wait "$MAYFLY_PID" 2>/dev/null || true
  MAYFLY_PID=
}

# api PATH JSON: an admin POST; prints the response body.
api() {
  curl -sf -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' -d "$2" "$BASE$1"
}

# resource_server: creates an introspecting client; sets RS_AUTH.
resource_server() {
  local out
  out=$(api /v1/tenants/demo/clients '{"client_id":"bench-rs","kind":"resource_server","max_ttl_seconds":900}')
  RS_SECRET=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
  RS_AUTH="Basic $(printf 'bench-rs:%s' "$RS_SECRET" | base64 -w0)"
}

MINT_BODY="grant_type=client_credentials&resource=$RESOURCE&scope=issues:read&workflow=release"

# mint_tokens N FILE: N tokens, one introspection body per line.
mint_tokens() {
  python3 - "$BASE" "$DEMO_AUTH" "$1" "$2" "$MINT_BODY" <<'PY'
import json, sys, urllib.request, concurrent.futures
base, auth, n, path, body = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
def mint(_):
    req = urllib.request.Request(base + "/oauth2/token", data=body.encode(), headers={"Authorization": auth})
    return json.load(urllib.request.urlopen(req))["access_token"]
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    tokens = list(pool.map(mint, range(n)))
with open(path, "w") as f:
    f.writelines(f"token={t}\n" for t in tokens)
PY
}

# load LABEL OHA-ARGS...: runs oha BENCH_RUNS times (default 1) for DURATION
# over CONNECTIONS and prints one line: the median throughput (with the
# lowest and highest run when there are several), the median p50 and p99,
# the status codes of all runs (the peak RSS column is LOAD_PID's, mayfly's
# by default).
load() {
  local label=$1 results=()
  shift
  for _ in $(seq 1 "${BENCH_RUNS:-1}"); do
    results+=("$(mktemp -p "$WORK")")
    oha --no-tui --output-format json -w -z "$DURATION" -c "$CONNECTIONS" "$@" >"${results[-1]}"
  done
  python3 - "$label" "${LOAD_PID:-$MAYFLY_PID}" "${results[@]}" <<'PY'
import collections, json, statistics, sys
label, pid, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = [json.load(open(p)) for p in paths]
rates = sorted(r["summary"]["requestsPerSec"] for r in runs)
med = lambda xs: statistics.median(x for x in xs if x is not None) if any(x is not None for x in xs) else None
p50 = med([r["latencyPercentiles"]["p50"] for r in runs])
p99 = med([r["latencyPercentiles"]["p99"] for r in runs])
codes, errors = collections.Counter(), collections.Counter()
for r in runs:
    codes.update(r.get("statusCodeDistribution", {}))
    errors.update(r.get("errorDistribution", {}))
rss = next((l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM")), "?")
ms = lambda v: f"{v * 1000:.1f}" if v is not None else "-"
rate = f"{statistics.median(rates):,.0f}/s"
if len(rates) > 1:
    rate += f" ({rates[0]:,.0f}–{rates[-1]:,.0f}, {len(rates)} runs)"
print(f"| {label} | {rate} | {ms(p50)} ms | {ms(p99)} ms | "
      f"{' '.join(f'{k}×{v}' for k, v in sorted(codes.items()))}{' errors ' + str(dict(errors)) if errors else ''} | "
      f"{int(rss) // 1024} MiB |")
PY
}

table_header() {
  echo "| scenario | throughput | p50 | p99 | status codes | server peak RSS |"
  echo "|---|---|---|---|---|---|"
}

# check_active FILE: the first token of FILE introspects as active (else stop).
check_active() {
  curl -sf -H "Authorization: $RS_AUTH" --data "$(head -1 "$1")" "$BASE/oauth2/introspect" | grep -q '"active":true' ||
    { echo "introspection of a fresh token is not active" >&2; exit 1; }
}

# introspectable BACKEND: mayfly on BACKEND with a resource server (RS_AUTH) and
# $TOKENS tokens minted into $WORK/tokens (one introspection body a line), the first checked active.
introspectable() {
  mayfly_start "$1"
  resource_server
  mint_tokens "$TOKENS" "$WORK/tokens"
  check_active "$WORK/tokens"
}
