-- The users table. IF NOT EXISTS: a database made before migrations existed already has
-- exactly this schema (tests/data/legacy_schema.sql) and is adopted as it is.
CREATE TABLE IF NOT EXISTS users (
    id bigserial PRIMARY KEY,
    -- "C" collation: byte order, so the unique index also serves username-prefix ranges.
    username varchar(32) COLLATE "C" NOT NULL,
    email varchar(254),
    full_name varchar(200),
    -- Bumped by every update; the ETag, so If-Match is checked inside the UPDATE itself.
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS user_username ON users (username);
CREATE UNIQUE INDEX IF NOT EXISTS users_email_lower ON users (lower(email));
