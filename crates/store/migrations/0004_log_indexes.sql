-- Lookups the message log makes: deliveries by message (retention,
-- clearing), messages by channel (the admin filter, definition delete),
-- audience counts by age (their own sweep).
CREATE INDEX realtime_webhooks_by_message ON realtime_webhooks (message_id);
CREATE INDEX realtime_messages_by_channel ON realtime_messages (app, channel_id);
