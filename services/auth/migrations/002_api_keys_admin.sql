-- 002_api_keys_admin.sql — API keys, the audit log, and what admin lists need.
-- Applied by cn_pg_migrate with search_path set to "auth", so names are unqualified.

-- Lists of users are newest first by (created_at, id) with cursor tokens: the time must
-- be there. Users made by 001's code always have it; the UPDATE only covers rows made by
-- hand.
UPDATE users SET created_at = now() WHERE created_at IS NULL;
ALTER TABLE users ALTER COLUMN created_at SET NOT NULL;
CREATE INDEX users_created_idx ON users(created_at DESC, id DESC);

-- API keys: cairn_<id>_<secret><check> (lib/apikey.h). Only the SHA-256 of the secret is
-- kept (hex), compared in constant time. A key is live while revoked_at is null and
-- expires_at is null or in the future. last_used_at is written in batches
-- (auth_lastused.c), not per request.
CREATE TABLE api_keys (
    id           text PRIMARY KEY,          -- the public key id, 12 base62 characters
    user_id      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         text NOT NULL,
    scopes       text[] NOT NULL,           -- each a scope of auth_scopes.c, within the role
    secret_hash  text NOT NULL CHECK (length(secret_hash) = 64),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,               -- null = never
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_user_idx ON api_keys(user_id, created_at DESC, id DESC);

-- Who did what to whom. actor and subject are user ids without a foreign key on purpose:
-- the record outlives the user.
CREATE TABLE audit (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    action     text NOT NULL,               -- login.ok, api_key.created, user.updated, ...
    actor      uuid,                        -- null = anonymous or the system
    subject    uuid,                        -- the user acted upon
    ip         text,
    request_id text,
    detail     text                         -- a short sentence, never a secret
);
CREATE INDEX audit_at_idx ON audit(at DESC, id DESC);
CREATE INDEX audit_subject_idx ON audit(subject, at DESC, id DESC);
CREATE INDEX audit_action_idx ON audit(action, at DESC, id DESC);
