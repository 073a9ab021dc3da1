-- The audit log as a transparency log (DESIGN "The audit log at scale").
-- From here on an event is not linked to the one before it: it carries the
-- SHA-256 of its own canonical content in `hash` (and an empty `prev_hash`).
-- The chain written before this migration stays as it was, ending at
-- audit_chain.head, and is verified as a chain.

-- Committed events wait here until the integrator gives them a log index.
CREATE TABLE audit_pending (
    seq INTEGER PRIMARY KEY
);

CREATE TRIGGER audit_events_pending AFTER INSERT ON audit_events
BEGIN
    INSERT INTO audit_pending (seq) VALUES (NEW.seq);
END;

-- One row per integrated event: its log index and content hash (32 bytes).
CREATE TABLE audit_leaves (
    log_index INTEGER PRIMARY KEY,
    seq       INTEGER NOT NULL,
    hash      BLOB NOT NULL,
    CONSTRAINT audit_leaves_seq_key UNIQUE (seq)
);

-- Hashes of complete subtrees of 2^level leaves from `start`, levels 4, 8, ….
CREATE TABLE audit_nodes (
    level INTEGER NOT NULL,
    start INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, start)
);

-- One signed checkpoint (a C2SP signed note) per integrated batch.
CREATE TABLE audit_tree_heads (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    at   TEXT NOT NULL,
    note TEXT NOT NULL
);

-- The log's one row: its size, origin and checkpoint key (sealed).
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    size        INTEGER NOT NULL,
    origin      TEXT,
    public_key  BLOB,
    sealed_key  BLOB
);
INSERT INTO audit_log (id, size) VALUES (1, 0);

CREATE TRIGGER audit_leaves_no_update BEFORE UPDATE ON audit_leaves
BEGIN SELECT RAISE(ABORT, 'audit_leaves is append-only'); END;
CREATE TRIGGER audit_leaves_no_delete BEFORE DELETE ON audit_leaves
BEGIN SELECT RAISE(ABORT, 'audit_leaves is append-only'); END;
CREATE TRIGGER audit_nodes_no_update BEFORE UPDATE ON audit_nodes
BEGIN SELECT RAISE(ABORT, 'audit_nodes is append-only'); END;
CREATE TRIGGER audit_nodes_no_delete BEFORE DELETE ON audit_nodes
BEGIN SELECT RAISE(ABORT, 'audit_nodes is append-only'); END;
CREATE TRIGGER audit_tree_heads_no_update BEFORE UPDATE ON audit_tree_heads
BEGIN SELECT RAISE(ABORT, 'audit_tree_heads is append-only'); END;
CREATE TRIGGER audit_tree_heads_no_delete BEFORE DELETE ON audit_tree_heads
BEGIN SELECT RAISE(ABORT, 'audit_tree_heads is append-only'); END;

-- How far each export URL has been delivered (the next log index to send).
CREATE TABLE audit_exports (
    sink       TEXT PRIMARY KEY,
    next_index INTEGER NOT NULL
);
