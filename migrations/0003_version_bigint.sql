-- The version (the ETag) grows by one per update: as a 4-byte integer a user updated 2^31
-- times could not be updated again. As a bigint it never runs out (2^63 updates).
ALTER TABLE users ALTER COLUMN version TYPE bigint;
