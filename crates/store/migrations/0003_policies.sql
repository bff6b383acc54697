-- Per-app permission policies of the InsForge surface: who may subscribe
-- to and publish on channels with definitions. `command` is `subscribe` or
-- `publish`; `roles` a JSON list; `condition` a filter expression (or
-- null: the roles alone decide).
CREATE TABLE realtime_policies (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    command TEXT NOT NULL,
    name TEXT NOT NULL,
    roles TEXT NOT NULL,
    condition TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (app, command, name)
);
