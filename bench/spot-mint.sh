#!/usr/bin/env bash
# Spot check of mint throughput: the release binary with --dev on SQLite and on a
# fresh Postgres schema, driven by wrk (Debian package `wrk`; 2 threads, 32
# connections, 10 s) on the same machine. Prints requests/s, p50, p99, peak RSS.
# Build first: cargo build --release --bin mayfly
set -euo pipefail
BIN="${MAYFLY_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/mayfly}"
run() {
  local name=$1 url=$2 port=$3
  local dir=$(mktemp -d)
  cd "$dir"
  MAYFLY_LISTEN=127.0.0.1:$port MAYFLY_DATABASE_URL="$url" MAYFLY_MASTER_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY= \
    MAYFLY_BOOTSTRAP_ADMIN_SECRET=mfy_cs_bench-admin-secret-0123456789abcdef0123 RUST_LOG=warn \
    $BIN --dev > out.log 2>&1 &
  local pid=$!
  for _ in $(seq 1 50); do curl -sf http://127.0.0.1:$port/readyz >/dev/null && break; sleep 0.2; done
  local secret=$(grep -o "demo-ci:mfy_cs_[A-Za-z0-9_-]*" out.log | head -1 | cut -d: -f2)
  local auth=$(printf 'demo-ci:%s' "$secret" | base64 -w0)
  cat > mint.lua <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&resource=https://mcp.demo.test/github&scope=issues:read&workflow=release"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $auth"
LUA
  curl -s -o /dev/null -w "$name first mint: %{http_code}\n" -X POST -H "Authorization: Basic $auth" \
    -d 'grant_type=client_credentials&resource=https://mcp.demo.test/github&scope=issues:read&workflow=release' http://127.0.0.1:$port/oauth2/token
  echo "== $name mint, wrk -t2 -c32 -d10s"
  wrk -t2 -c32 -d10s --latency -s mint.lua http://127.0.0.1:$port/oauth2/token | grep -E "Requests/sec|50%|99%|Non-2xx"
  echo "peak RSS: $(grep VmHWM /proc/$pid/status)"
  kill $pid; wait $pid 2>/dev/null || true
}
run sqlite "sqlite://./d/mayfly.db" 18601
schema=bench_$RANDOM$RANDOM
psql postgres://postgres@127.0.0.1:5432/postgres -q -c "CREATE SCHEMA $schema"
run postgres "postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=$schema" 18602
psql postgres://postgres@127.0.0.1:5432/postgres -q -c "SET client_min_messages = warning; DROP SCHEMA $schema CASCADE"
