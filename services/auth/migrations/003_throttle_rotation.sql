-- 003_throttle_rotation.sql — per-account login throttling, and signing keys that can be
-- rotated while replicas run. Applied by cn_pg_migrate with search_path set to "auth".

-- Failed logins per account, keyed by SHA-256 of the normalised email so an address
-- nobody registered is throttled exactly like a real one without being kept in clear.
-- Every attempt that is let through counts when it starts (one upsert, so concurrent
-- attempts cannot slip past a block); a successful login deletes the row. Rows older than
-- the window that block nothing are purged (auth_db_throttle_purge).
CREATE TABLE login_throttle (
    email_hash    bytea PRIMARY KEY CHECK (length(email_hash) = 32),
    failures      int NOT NULL,
    last_failure  timestamptz NOT NULL,
    blocked_until timestamptz               -- null = not blocked
);
CREATE INDEX login_throttle_last_failure_idx ON login_throttle(last_failure);

-- Rotation: a new key is published at once but signs only from activates_at; the key
-- it replaces gets retired_at = that same time and stays published until every token it
-- signed has expired (retired_at + access TTL + grace). Keys made before this migration
-- signed from their creation.
ALTER TABLE signing_keys ADD COLUMN activates_at timestamptz;
UPDATE signing_keys SET activates_at = created_at;
ALTER TABLE signing_keys ALTER COLUMN activates_at SET NOT NULL,
                         ALTER COLUMN activates_at SET DEFAULT now();
