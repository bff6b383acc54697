-- The message log, channel webhook deliveries, and the leases that keep a
-- cluster-wide job to one runner. Same conventions as 0001: BIGINT flags
-- and counts, epoch milliseconds, TEXT JSON.

-- One row per message published on a channel with a definition, written
-- by a dispatch worker; idempotent by message id.
CREATE TABLE realtime_messages (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    event_name TEXT NOT NULL,
    channel_id TEXT,
    channel_name TEXT NOT NULL,
    payload TEXT NOT NULL,
    sender_type TEXT NOT NULL,
    sender_id TEXT,
    wh_audience_count BIGINT NOT NULL,
    wh_delivered_count BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX realtime_messages_by_app ON realtime_messages (app, created_at);

-- Sockets each gateway delivered a message to; a message's wsAudienceCount
-- is the sum over gateways. Kept apart from the row so that a count that
-- arrives before (or after) the row lands all the same.
CREATE TABLE realtime_audience (
    message_id TEXT NOT NULL,
    node TEXT NOT NULL,
    sockets BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, node)
);
CREATE INDEX realtime_audience_by_time ON realtime_audience (created_at);

-- One series of attempts per message and URL: the id is the webhook-id.
-- status: 0 pending, 1 delivered, 2 failed after the last attempt,
-- 3 the URL answered 410 (it is disabled for the channel).
CREATE TABLE realtime_webhooks (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    message_id TEXT NOT NULL,
    channel_id TEXT,
    channel_name TEXT NOT NULL,
    event_name TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    trace TEXT,
    status BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX realtime_webhooks_due ON realtime_webhooks (status, next_at);

-- URLs that answered 410 Gone, per channel definition: no more deliveries.
CREATE TABLE realtime_webhook_disabled (
    channel_id TEXT NOT NULL,
    url TEXT NOT NULL,
    disabled_at BIGINT NOT NULL,
    PRIMARY KEY (channel_id, url)
);

CREATE TABLE herald_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
