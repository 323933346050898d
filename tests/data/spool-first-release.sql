-- A spool index as the first release wrote it (no schema version), with one
-- queued and one stored document and their batch: the upgrade test migrates it.
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL,
    state TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    pages INTEGER NOT NULL,
    doc_class TEXT NOT NULL DEFAULT 'normal',
    pdf_sha256 TEXT,
    ciphertext_sha256 TEXT,
    created_at REAL NOT NULL,
    queued_at REAL,
    sent_at REAL,
    stored_at REAL,
    purged_at REAL,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS documents_state ON documents(state);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    ended_at REAL,
    pages_in INTEGER NOT NULL DEFAULT 0,
    documents INTEGER NOT NULL DEFAULT 0,
    blank INTEGER NOT NULL DEFAULT 0,
    barcode_pages INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'open',
    warnings TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO batches VALUES ('b20261101T080000aa', 1793520000.0, 1793520060.0, 3, 2, 0, 1, 'complete', '[]');
INSERT INTO documents VALUES ('d20261101T080001aa', 'b20261101T080000aa', 'queued', 2048, 2, 'normal', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 1793520001.0, 1793520001.0, NULL, NULL, NULL, NULL);
INSERT INTO documents VALUES ('d20261101T080002aa', 'b20261101T080000aa', 'stored', 1024, 1, 'cover', 'cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc', 'dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd', 1793520002.0, 1793520002.0, 1793520010.0, 1793520020.0, NULL, '{}');
INSERT INTO meta VALUES ('last_sync', '2026-11-01T08:00:20Z');
