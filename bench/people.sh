#!/usr/bin/env bash
# People's grants: authorization_code and refresh_token, each request with a
# code or refresh token of its own, spent once. oha samples lines of a body
# file (a spent code would come back as a replay), so the load is curl's
# --parallel over one request per line, 64 at a time; throughput is N over
# the wall time, p50/p99 from curl's own per-request times. The codes come
# from N sign-ins through a loopback IdP just before (bench/people_codes.py;
# a code lives 60 s).
source "$(dirname "$0")/lib.sh"
bench_setup
N=${BENCH_PEOPLE:-1000}
PY=${BENCH_PYTHON:-$ROOT/.venv/bin/python} # scripts/test creates it (PyJWT, cryptography, httpx2, mcp)
echo "## people's grants: $N codes, then $N refresh tokens, each spent once (curl --parallel-max $CONNECTIONS)"
table_header

# once_each LABEL BODIES: one POST to the token endpoint per line, CONNECTIONS at a time.
once_each() {
  local label=$1 bodies=$2 cfg="$WORK/curl.cfg" out="$WORK/curl.out" start end
  "$PY" - "$BASE/oauth2/token" "$bodies" "$cfg" <<'PY'
import sys
url, bodies, cfg = sys.argv[1:4]
with open(cfg, "w") as f:
    for i, body in enumerate(l for l in open(bodies).read().split("\n") if l):
        f.write(("next\n" if i else "") + f'url = "{url}"\ndata = "{body}"\noutput = "/dev/null"\n'
                'write-out = "%{http_code} %{time_total}\\n"\n')
PY
  start=$(date +%s.%N)
  curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max "$CONNECTIONS" -K "$cfg" >"$out"
  end=$(date +%s.%N)
  python3 - "$label" "$MAYFLY_PID" "$out" "$start" "$end" <<'PY'
import collections, statistics, sys
label, pid, out, start, end = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
rows = [l.split() for l in open(out) if l.strip()]
codes = collections.Counter(r[0] for r in rows)
times = sorted(float(r[1]) for r in rows)
q = statistics.quantiles(times, n=100)
rss = next((l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM")), "?")
print(f"| {label} | {len(rows) / (end - start):,.0f}/s | {q[49] * 1000:.1f} ms | {q[98] * 1000:.1f} ms | "
      f"{' '.join(f'{k}×{v}' for k, v in sorted(codes.items()))} | {int(rss) // 1024} MiB |")
PY
}

for backend in ${BENCH_BACKENDS:-postgres sqlite}; do
  mayfly_start "$backend"
  # Each run spends fresh codes and tokens: one row per run.
  for run in $(seq 1 "${BENCH_RUNS:-1}"); do
    "$PY" "$ROOT/bench/people_codes.py" "$BASE" "$ADMIN" "$RESOURCE" "$N" codes "$WORK/codes"
    once_each "authorization_code, $backend (run $run)" "$WORK/codes"
    "$PY" "$ROOT/bench/people_codes.py" "$BASE" "$ADMIN" "$RESOURCE" "$N" refresh "$WORK/refresh"
    once_each "refresh_token, $backend (run $run)" "$WORK/refresh"
  done
  mayfly_stop
done
