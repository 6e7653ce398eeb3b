-- 001_init.sql — the auth schema: users, signing keys, refresh-token families.
-- Applied by cn_pg_migrate with search_path set to the service's schema ("auth"), so
-- names here are unqualified. gen_random_uuid() is built into PostgreSQL 13+.

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text UNIQUE NOT NULL,     -- normalised (trimmed, lowercased) by the service
    password_hash text NOT NULL,            -- Argon2id encoded string
    role          text NOT NULL DEFAULT 'user',
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz DEFAULT now()
);

-- Ed25519 signing keys. The raw 32-byte private key is kept so every replica signs with
-- the same key; non-retired keys are published in JWKS.
CREATE TABLE signing_keys (
    kid         text PRIMARY KEY,           -- RFC 7638 thumbprint
    private_key bytea NOT NULL CHECK (length(private_key) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);

-- One family per login; every refresh rotates within it, and reuse of a rotated token
-- revokes the whole family (RFC 9700).
CREATE TABLE refresh_families (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX refresh_families_user_idx ON refresh_families(user_id);

-- Tokens are stored only as SHA-256 of the token text. replaced_by names the token a
-- rotation made, which tells "the immediately previous token" (its successor is live)
-- from an older one.
CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    family_id   uuid NOT NULL REFERENCES refresh_families(id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    rotated_at  timestamptz,
    replaced_by bytea
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens(family_id);
-- At most one live token per family, enforced rather than hoped for.
CREATE UNIQUE INDEX refresh_tokens_live_idx ON refresh_tokens(family_id) WHERE rotated_at IS NULL;
