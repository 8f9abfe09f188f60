-- oraculo-trio schema, version 2 (SQLite): rules may inhibit others (the rule file's
-- `inhibits` label matchers, as a JSON object).
ALTER TABLE rules ADD COLUMN inhibits TEXT NOT NULL DEFAULT '{}';
