-- oraculo-trio schema, version 3 (SQLite): what the HTTP API and the operator's commands read.

-- The latest severity and message of each alert, so `alerts list` needs no history (which
-- retention prunes).
ALTER TABLE rule_alerts ADD COLUMN severity TEXT NOT NULL DEFAULT 'warning';
ALTER TABLE rule_alerts ADD COLUMN message TEXT NOT NULL DEFAULT '';

-- The template of a rule's resolved notifications.
ALTER TABLE rules ADD COLUMN message_resolved TEXT NOT NULL DEFAULT '';

-- Silences with label matchers: a JSON list of [name, op, value] (op: =, !=, =~, !~). The
-- rule_id and symbol columns stay for equality-only silences (what earlier releases read).
ALTER TABLE silences ADD COLUMN matchers TEXT NOT NULL DEFAULT '[]';

-- History by time (alerts history --since) and retention pruning.
CREATE INDEX alert_events_at ON alert_events (at);
