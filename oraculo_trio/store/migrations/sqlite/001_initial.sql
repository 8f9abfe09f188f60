-- oraculo-trio schema, version 1 (SQLite). Times are Unix seconds (REAL).

-- Current state of every (rule, symbol) alert: one row each, upserted by the store writer.
CREATE TABLE rule_alerts (
    rule_id          TEXT    NOT NULL,
    symbol           TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    started_at       REAL,
    last_change      REAL    NOT NULL,
    fire_count       INTEGER NOT NULL DEFAULT 0,
    last_value       REAL,
    labels           TEXT    NOT NULL DEFAULT '{}',
    last_notified_at REAL,
    PRIMARY KEY (rule_id, symbol)
);

-- Every transition, append-only, in the order the writer received them.
CREATE TABLE alert_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id        TEXT    NOT NULL,
    symbol         TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    previous_state TEXT    NOT NULL,
    value          REAL,
    at             REAL    NOT NULL,
    started_at     REAL,
    fire_count     INTEGER NOT NULL,
    repeat         INTEGER NOT NULL DEFAULT 0,
    severity       TEXT    NOT NULL,
    message        TEXT    NOT NULL DEFAULT '',
    labels         TEXT    NOT NULL DEFAULT '{}'
);
-- An event's identity: a batch retried after an in-doubt commit is not stored twice.
CREATE UNIQUE INDEX alert_events_identity
    ON alert_events (rule_id, symbol, at, state, fire_count, repeat);

-- Every notification delivery attempt, append-only.
CREATE TABLE dispatch_logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id    TEXT    NOT NULL,
    symbol     TEXT    NOT NULL,
    sink       TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    attempt    INTEGER NOT NULL,
    latency_ms REAL    NOT NULL,
    error      TEXT,
    at         REAL    NOT NULL,
    state      TEXT    NOT NULL
);
CREATE INDEX dispatch_logs_at ON dispatch_logs (at);

-- Rules kept in the database (rules.source = "db", filled by `oraculo-trio rules push`).
CREATE TABLE rules (
    id                TEXT    PRIMARY KEY,
    kind              TEXT    NOT NULL,
    symbols           TEXT    NOT NULL DEFAULT '[]',
    params            TEXT    NOT NULL DEFAULT '{}',
    severity          TEXT    NOT NULL DEFAULT 'warning',
    labels            TEXT    NOT NULL DEFAULT '{}',
    message           TEXT    NOT NULL DEFAULT '',
    for_s             REAL    NOT NULL DEFAULT 0,
    keep_firing_for_s REAL    NOT NULL DEFAULT 0,
    repeat_interval_s REAL,
    trigger           TEXT,
    expires_at        REAL,
    enabled           INTEGER NOT NULL DEFAULT 1
);

-- Silences: mute notifications of a rule and/or symbol (NULL = any) in [starts_at, ends_at).
CREATE TABLE silences (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id    TEXT,
    symbol     TEXT,
    starts_at  REAL NOT NULL,
    ends_at    REAL NOT NULL,
    comment    TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL DEFAULT '',
    CHECK (ends_at > starts_at)
);
CREATE INDEX silences_ends_at ON silences (ends_at);
