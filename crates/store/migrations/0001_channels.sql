-- Channel definitions and per-app realtime settings. Written for both
-- SQLite and PostgreSQL: integers are BIGINT (a flag is 0 or 1: sqlx's
-- Any driver reads no SQLite BOOLEAN), times epoch milliseconds.
CREATE TABLE realtime_channels (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    pattern TEXT NOT NULL,
    description TEXT,
    webhook_urls TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (app, pattern)
);

CREATE TABLE realtime_config (
    app TEXT PRIMARY KEY,
    retention_days BIGINT
);

-- Bumped by every change to the two tables above, in the same
-- transaction: gateways poll it to know when to reload.
CREATE TABLE realtime_revision (
    id BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL
);

INSERT INTO realtime_revision (id, revision) VALUES (1, 0);
