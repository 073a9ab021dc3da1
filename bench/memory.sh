#!/usr/bin/env bash
# Memory at scale, on Postgres: 10,000 clients (100 tenants of 100, each with
# a secret digest and a grant) and 1,000,000 live leases loaded with SQL,
# then the mint load; prints mayfly's peak RSS. Memory must follow clients
# and resources (the catalog), never leases.
source "$(dirname "$0")/lib.sh"
bench_setup
LEASES=${BENCH_LEASES:-1000000}
echo "## memory with 10,000 clients and $LEASES live leases (Postgres)"
table_header
mayfly_start postgres
schema=$SCHEMA
psql "$PG" -q <<SQL
SET search_path = $schema;
INSERT INTO tenants (id, name, created_at) SELECT 'mem-' || t, 'Memory ' || t, now() FROM generate_series(1, 100) t;
INSERT INTO resources (id, tenant_id, uri, canonical_uri, name, scopes, default_ttl_seconds, max_ttl_seconds, created_at, updated_at)
  SELECT gen_random_uuid(), 'mem-' || t, 'https://mcp.mem-' || t || '.test/x', 'https://mcp.mem-' || t || '.test/x',
         'x', '["read","write"]', 600, 3600, now(), now()
  FROM generate_series(1, 100) t;
INSERT INTO clients (client_id, tenant_id, name, kind, workflows, grants, max_ttl_seconds, created_at, updated_at)
  SELECT 'mem-' || t || '-c' || c, 'mem-' || t, 'client ' || c, 'ci', '["release","deploy"]',
         ('[{"resource":"https://mcp.mem-' || t || '.test/x","scopes":["read","write"]}]')::jsonb, 900, now(), now()
  FROM generate_series(1, 100) t, generate_series(1, 100) c;
INSERT INTO leases (id, tenant_id, workflow, workload, client_id, resource, scopes, kid, issued_at, expires_at)
  SELECT gen_random_uuid(), 'mem-' || (g % 100 + 1), 'release', 'wl-' || (g % 10000), 'mem-' || (g % 100 + 1) || '-c1',
         'https://mcp.mem-1.test/x', '["read"]', 'bench', now(), now() + interval '1 hour'
  FROM generate_series(1, $LEASES) g;
ANALYZE leases;
SQL
# Each client's secret is its id, digested as mayfly digests secrets (HMAC-SHA256
# under a fixed key), so the last one loaded can mint below.
python3 - "$schema" >"$WORK/secrets.sql" <<'PY'
import hashlib, hmac, sys
rows = []
for t in range(1, 101):
    for c in range(1, 101):
        cid = f"mem-{t}-c{c}"
        d = hmac.new(b"mayfly client secret digest v1", cid.encode(), hashlib.sha256).hexdigest()
        rows.append(f"(gen_random_uuid(), '{cid}', '\\x{d}', now())")
print(f"SET search_path = {sys.argv[1]};")
print("INSERT INTO client_secrets (id, client_id, secret_hash, created_at) VALUES " + ",\n".join(rows) + ";")
PY
psql "$PG" -q -f "$WORK/secrets.sql"
# Until the catalog has every tenant (its poll runs each second): the last
# tenant's last client mints.
loaded=
for _ in $(seq 1 100); do
  curl -sf -u mem-100-c100:mem-100-c100 -d grant_type=client_credentials -d resource=https://mcp.mem-100.test/x \
    -d scope=read -d workflow=release "$BASE/oauth2/token" >/dev/null && loaded=1 && break
  sleep 0.1
done
[ -n "$loaded" ] || { echo "the catalog never loaded the 10,000 clients" >&2; exit 1; }
echo "| loaded: $(psql "$PG" -At -c "SELECT count(*) FROM $schema.clients") clients, $(psql "$PG" -At -c "SELECT count(*) FROM $schema.leases") leases | | | | | $(($(grep VmRSS /proc/$MAYFLY_PID/status | awk '{print $2}') / 1024)) MiB now |"
load "mint, postgres, 10k clients, $LEASES leases" -m POST -H "Authorization: $DEMO_AUTH" \
  -H 'content-type: application/x-www-form-urlencoded' -d "$MINT_BODY" "$BASE/oauth2/token"
mayfly_stop
