-- oraculo-trio schema, version 1 (PostgreSQL). Times are Unix seconds (double precision),
-- exactly the floats the service uses, so rows round-trip unchanged.

-- Current state of every (rule, symbol) alert: one row each, upserted by the store writer.
CREATE TABLE rule_alerts (
    rule_id          text             NOT NULL,
    symbol           text             NOT NULL,
    state            text             NOT NULL,
    started_at       double precision,
    last_change      double precision NOT NULL,
    fire_count       integer          NOT NULL DEFAULT 0,
    last_value       double precision,
    labels           jsonb            NOT NULL DEFAULT '{}',
    last_notified_at double precision,
    PRIMARY KEY (rule_id, symbol)
);

-- Every transition, append-only, in the order the writer received them.
CREATE TABLE alert_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id        text             NOT NULL,
    symbol         text             NOT NULL,
    state          text             NOT NULL,
    previous_state text             NOT NULL,
    value          double precision,
    at             double precision NOT NULL,
    started_at     double precision,
    fire_count     integer          NOT NULL,
    repeat         boolean          NOT NULL DEFAULT false,
    severity       text             NOT NULL,
    message        text             NOT NULL DEFAULT '',
    labels         jsonb            NOT NULL DEFAULT '{}'
);
-- An event's identity: a batch retried after an in-doubt commit is not stored twice.
CREATE UNIQUE INDEX alert_events_identity
    ON alert_events (rule_id, symbol, at, state, fire_count, repeat);

-- Every notification delivery attempt, append-only.
CREATE TABLE dispatch_logs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id    text             NOT NULL,
    symbol     text             NOT NULL,
    sink       text             NOT NULL,
    status     text             NOT NULL,
    attempt    integer          NOT NULL,
    latency_ms double precision NOT NULL,
    error      text,
    at         double precision NOT NULL,
    state      text             NOT NULL
);
CREATE INDEX dispatch_logs_at ON dispatch_logs (at);

-- Rules kept in the database (rules.source = "db", filled by `oraculo-trio rules push`).
CREATE TABLE rules (
    id                text             PRIMARY KEY,
    kind              text             NOT NULL,
    symbols           jsonb            NOT NULL DEFAULT '[]',
    params            jsonb            NOT NULL DEFAULT '{}',
    severity          text             NOT NULL DEFAULT 'warning',
    labels            jsonb            NOT NULL DEFAULT '{}',
    message           text             NOT NULL DEFAULT '',
    for_s             double precision NOT NULL DEFAULT 0,
    keep_firing_for_s double precision NOT NULL DEFAULT 0,
    repeat_interval_s double precision,
    trigger           text,
    expires_at        double precision,
    enabled           boolean          NOT NULL DEFAULT true
);

-- Silences: mute notifications of a rule and/or symbol (NULL = any) in [starts_at, ends_at).
CREATE TABLE silences (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id    text,
    symbol     text,
    starts_at  double precision NOT NULL,
    ends_at    double precision NOT NULL,
    comment    text             NOT NULL DEFAULT '',
    created_by text             NOT NULL DEFAULT '',
    CHECK (ends_at > starts_at)
);
CREATE INDEX silences_ends_at ON silences (ends_at);
