-- The audit log as a transparency log (DESIGN "The audit log at scale").
-- From here on an event is not linked to the one before it: it carries the
-- SHA-256 of its own canonical content in `hash` (and an empty `prev_hash`),
-- so writers share no row. The chain written before this migration stays as
-- it was, ending at audit_chain.head, and is verified as a chain.

-- The writer order: every catalog change, revocation, key rotation and
-- start-up step takes it exclusively, every lease batch shared. It was the
-- chain-head row lock; a row lock taken FOR SHARE lets new sharers in past a
-- waiting exclusive locker (a revocation could wait as long as mints keep
-- coming), so the order is now an advisory lock, whose queue is fair: a
-- shared request waits behind an exclusive one already waiting. Keyed by
-- schema, so stores in different schemas of one database do not meet.
CREATE OR REPLACE FUNCTION catalog_lock() RETURNS trigger AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7370, hashtext(current_schema()));
    UPDATE audit_chain SET catalog_seq = catalog_seq + 1 WHERE id = 1;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

-- Committed events wait here until the integrator gives them a log index.
-- Filled by trigger, so no writer can forget, and only committed rows are
-- ever visible to the integrator: no watermark over sequence gaps needed.
CREATE TABLE audit_pending (
    seq BIGINT PRIMARY KEY
);
-- A queue: every row is deleted within about a second of its insert, so
-- vacuum it by row count, not by the table's (tiny) size.
ALTER TABLE audit_pending SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
                               autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000);

CREATE FUNCTION audit_events_pending() RETURNS trigger AS $$
BEGIN
    INSERT INTO audit_pending (seq) SELECT seq FROM new_events;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_events_pending AFTER INSERT ON audit_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_pending();

-- One row per integrated event: its log index and content hash (32 bytes).
CREATE TABLE audit_leaves (
    log_index BIGINT PRIMARY KEY,
    seq       BIGINT NOT NULL,
    hash      BYTEA NOT NULL,
    CONSTRAINT audit_leaves_seq_key UNIQUE (seq)
);

-- Hashes of complete subtrees of 2^level leaves from `start`, for levels
-- 4, 8, 12, …: a proof reads O(log n) of them and at most 15 leaves.
CREATE TABLE audit_nodes (
    level SMALLINT NOT NULL,
    start BIGINT NOT NULL,
    hash  BYTEA NOT NULL,
    PRIMARY KEY (level, start)
);

-- One signed checkpoint (a C2SP signed note) per integrated batch.
CREATE TABLE audit_tree_heads (
    size BIGINT PRIMARY KEY,
    root BYTEA NOT NULL,
    at   TIMESTAMPTZ NOT NULL,
    note TEXT NOT NULL
);

-- The log's one row: its size, its origin and checkpoint key (Ed25519,
-- PKCS#8 sealed under the master key). The integrator holds it FOR UPDATE
-- SKIP LOCKED, so one replica integrates at a time and a dead one's lock
-- ends with its connection.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    size        BIGINT NOT NULL,
    origin      TEXT,
    public_key  BYTEA,
    sealed_key  BYTEA
);
INSERT INTO audit_log (id, size) VALUES (1, 0);

CREATE FUNCTION audit_tree_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_leaves_no_update BEFORE UPDATE OR DELETE ON audit_leaves
    FOR EACH ROW EXECUTE FUNCTION audit_tree_append_only();
CREATE TRIGGER audit_nodes_no_update BEFORE UPDATE OR DELETE ON audit_nodes
    FOR EACH ROW EXECUTE FUNCTION audit_tree_append_only();
CREATE TRIGGER audit_tree_heads_no_update BEFORE UPDATE OR DELETE ON audit_tree_heads
    FOR EACH ROW EXECUTE FUNCTION audit_tree_append_only();

-- How far each export URL has been delivered (the next log index to send);
-- a file export keeps its own place in the file itself.
CREATE TABLE audit_exports (
    sink       TEXT PRIMARY KEY,
    next_index BIGINT NOT NULL
);
