#!/usr/bin/env bash
# High availability: mint on the reference pg_auto_failover setup
# (scripts/ha-up: a monitor and two nodes on this machine) with synchronous
# replication, beside the same setup with the standby made asynchronous and
# beside the machine's single Postgres; then the recovery time when the
# primary's host dies (SIGKILL to its pg_autoctl and Postgres) while one
# client mints in a loop. Needs root and postgresql-15-auto-failover.
source "$(dirname "$0")/lib.sh"
bench_setup
# Not under WORK: the servers run as postgres, and WORK is root's alone.
export MAYFLY_HA_DIR="/tmp/mayfly-ha-bench-$$" MAYFLY_HA_PORT=16000
PGBIN="/usr/lib/postgresql/$(ls /etc/postgresql | sort -V | tail -1)/bin"
as_pg() {
  runuser -u postgres -- env PATH="$PGBIN:/usr/bin:/bin" XDG_CONFIG_HOME="$MAYFLY_HA_DIR/xdg/config" \
    XDG_DATA_HOME="$MAYFLY_HA_DIR/xdg/data" XDG_RUNTIME_DIR="$MAYFLY_HA_DIR/xdg/run" "$@"
}
trap '"$ROOT/scripts/ha-up" down >/dev/null 2>&1 || true; bench_cleanup' EXIT
"$ROOT/scripts/ha-up" >"$WORK/ha-up.log"
ha_store() { # a fresh schema on the primary; prints the multi-host URL that uses it
  local schema=ha_$RANDOM$RANDOM
  psql -h 127.0.0.1 -p 16001 -U postgres -q -c "CREATE SCHEMA $schema"
  echo "postgres://postgres@127.0.0.1:16001,127.0.0.1:16002/postgres?sslmode=disable&target_session_attrs=read-write&options[search_path]=$schema"
}
sync_names() { psql -h 127.0.0.1 -p 16001 -U postgres -Atc 'show synchronous_standby_names'; }

mint() { # LABEL BACKEND
  mayfly_start "$2"
  load "$1" -m POST -H "Authorization: $DEMO_AUTH" \
    -H 'content-type: application/x-www-form-urlencoded' -d "$MINT_BODY" "$BASE/oauth2/token"
  mayfly_stop
}

echo "## Postgres high availability: mint with and without synchronous replication (oha -c $CONNECTIONS -z $DURATION)"
table_header
mint "mint, one Postgres (the machine's, no replica)" postgres
[ -n "$(sync_names)" ] || { echo "the standby is not synchronous" >&2; exit 1; }
mint "mint, pg_auto_failover, synchronous standby ($(sync_names))" "$(ha_store)"
as_pg pg_autoctl set node replication-quorum false --pgdata "$MAYFLY_HA_DIR/node2" >/dev/null 2>&1
for _ in $(seq 1 50); do [ -z "$(sync_names)" ] && break; sleep 0.2; done
[ -z "$(sync_names)" ] || { echo "the standby is still synchronous" >&2; exit 1; }
mint "mint, pg_auto_failover, asynchronous standby" "$(ha_store)"
as_pg pg_autoctl set node replication-quorum true --pgdata "$MAYFLY_HA_DIR/node2" >/dev/null 2>&1
for _ in $(seq 1 300); do [ -n "$(sync_names)" ] && break; sleep 0.2; done
[ -n "$(sync_names)" ] || { echo "the standby did not become synchronous again" >&2; exit 1; }

# Recovery: one client mints every 20 ms; the primary's host dies.
mayfly_start "$(ha_store)"
python3 - "$BASE" "$DEMO_AUTH" "$MINT_BODY" "$WORK/answers" <<'PY' &
import sys, time, urllib.request, urllib.error
base, auth, body, out = sys.argv[1:5]
with open(out, "w") as f:
    # Until two seconds after the first success that follows a failure (or 120 s).
    end, failed = time.time() + 120, False
    while time.time() < end:
        req = urllib.request.Request(base + "/oauth2/token", data=body.encode(), headers={"Authorization": auth})
        try:
            code = urllib.request.urlopen(req, timeout=35).status
        except urllib.error.HTTPError as e:
            code = e.code
        except Exception:
            code = 0
        f.write(f"{time.time():.3f} {code}\n")
        f.flush()
        failed = failed or code != 200
        if failed and code == 200:
            end = min(end, time.time() + 2)
        time.sleep(0.02)
PY
CLIENT=$!
sleep 3
KILLED=$(date +%s.%N)
postmaster=$(head -1 "$MAYFLY_HA_DIR/node1/postmaster.pid")
session=$(ps -o sid= -p "$postmaster" | tr -d ' ')
pkill -9 -s "$session"
for _ in $(seq 1 1200); do # at most two minutes
  [ "$(psql -h 127.0.0.1 -p 16002 -U postgres -Atc "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'" 2>/dev/null)" = t ] && break
  sleep 0.1
done
PROMOTED=$(date +%s.%N)
wait "$CLIENT"
mayfly_stop
python3 - "$KILLED" "$PROMOTED" "$WORK/answers" <<'PY'
import sys
killed, promoted = float(sys.argv[1]), float(sys.argv[2])
rows = [(float(t), int(c)) for t, c in (l.split() for l in open(sys.argv[3]))]
after = [(t, c) for t, c in rows if t > killed]
codes = {}
for _, c in after:
    codes[c] = codes.get(c, 0) + 1
print()
first_after = next((t for t, c in rows if t > promoted and c == 200), None)
print(f"- recovery (pg_auto_failover's default timeouts): the standby accepted writes {promoted - killed:.1f} s after "
      f"the primary's host was killed; the first mint answered 200 after that came {first_after - promoted:.1f} s later"
      if first_after else "- recovery: no mint succeeded after the promotion")
print(f"- answers after the kill: {', '.join(f'{c}×{n}' for c, n in sorted(codes.items()))} (0 = no answer)")
PY
