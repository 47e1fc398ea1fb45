-- API tokens: the secret is never stored, only its SHA-256 (a 256-bit random secret needs
-- no slow hash: there is nothing to guess). A token reads orgapi_<id>_<secret>, so the row
-- is found by its key and the hash compared in constant time.
CREATE TABLE api_tokens (
    id bigserial PRIMARY KEY,
    name varchar(100) NOT NULL,
    scopes text[] NOT NULL,
    secret_sha256 bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);
