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
INSERT INTO client_secrets (id, client_id, secret_hash, created_at)
  SELECT gen_random_uuid(), client_id, sha256(client_id::bytea), now() FROM clients WHERE tenant_id LIKE 'mem-%';
INSERT INTO leases (id, tenant_id, workflow, workload, client_id, resource, scopes, kid, issued_at, expires_at)
  SELECT gen_random_uuid(), 'mem-' || (g % 100 + 1), 'release', 'wl-' || (g % 10000), 'mem-' || (g % 100 + 1) || '-c1',
         'https://mcp.mem-1.test/x', '["read"]', 'bench', now(), now() + interval '1 hour'
  FROM generate_series(1, $LEASES) g;
ANALYZE leases;
SQL
sleep 3 # the catalog's one-second poll picks up the 10,000 clients
echo "| loaded: $(psql "$PG" -At -c "SELECT count(*) FROM $schema.clients") clients, $(psql "$PG" -At -c "SELECT count(*) FROM $schema.leases") leases | | | | | $(($(grep VmRSS /proc/$MAYFLY_PID/status | awk '{print $2}') / 1024)) MiB now |"
load "mint, postgres, 10k clients, $LEASES leases" -m POST -H "Authorization: $DEMO_AUTH" \
  -H 'content-type: application/x-www-form-urlencoded' -d "$MINT_BODY" "$BASE/oauth2/token"
mayfly_stop
