#!/usr/bin/env bash
# People's grants: authorization_code and refresh_token, each request with a
# code or refresh token of its own (spent once: oha -n N over a body file of
# N lines, so no request replays one). The codes come from N sign-ins through
# a loopback IdP just before (bench/people_codes.py; codes live 60 s).
source "$(dirname "$0")/lib.sh"
bench_setup
N=${BENCH_PEOPLE:-3000}
PY=${BENCH_PYTHON:-$ROOT/.venv/bin/python} # scripts/test creates it (PyJWT, cryptography, httpx2, mcp)
echo "## people's grants: $N codes, then $N refresh tokens, each spent once (oha -c $CONNECTIONS -n $N)"
table_header
RUNS=${BENCH_RUNS:-1}
for backend in ${BENCH_BACKENDS:-postgres sqlite}; do
  mayfly_start "$backend"
  # Each run spends fresh codes and tokens (a spent one would be a replay): one row per run.
  for run in $(seq 1 "$RUNS"); do
    "$PY" "$ROOT/bench/people_codes.py" "$BASE" "$ADMIN" "$RESOURCE" "$N" codes "$WORK/codes"
    BENCH_RUNS=1 LOAD_COUNT=$N load "authorization_code, $backend (run $run)" -m POST \
      -H 'content-type: application/x-www-form-urlencoded' -Z "$WORK/codes" "$BASE/oauth2/token"
    "$PY" "$ROOT/bench/people_codes.py" "$BASE" "$ADMIN" "$RESOURCE" "$N" refresh "$WORK/refresh"
    BENCH_RUNS=1 LOAD_COUNT=$N load "refresh_token, $backend (run $run)" -m POST \
      -H 'content-type: application/x-www-form-urlencoded' -Z "$WORK/refresh" "$BASE/oauth2/token"
  done
  mayfly_stop
done
