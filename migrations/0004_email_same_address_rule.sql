-- One rule for "the same email address": Unicode NFC, then lower case (PostgreSQL's lower(),
-- which the database's C.UTF-8 locale applies to every script). Spellings that only differ in
-- normalisation (NFC "é" and NFD "e" + U+0301, U+212A KELVIN SIGN and "K") or in case are one
-- address, enforced by the unique index itself. The service stores new addresses in NFC.
--
-- Rows made under the old rule (lower(email) only) are kept as they are. If two of them are
-- one address under the new rule, the index cannot be built: this migration stops, changing
-- nothing, and names them, for a person to decide which keeps the address.
DO $$
DECLARE
    clashes text;
BEGIN
    SELECT string_agg(ids, '; ') INTO clashes
    FROM (
        SELECT string_agg(id::text, ', ' ORDER BY id) AS ids
        FROM users
        WHERE email IS NOT NULL
        GROUP BY lower(normalize(email, NFC))
        HAVING count(*) > 1
    ) same_address;
    IF clashes IS NOT NULL THEN
        RAISE EXCEPTION 'these users share an email address under the new rule (NFC, lower case): ids %; change or clear all but one, then migrate again', clashes;
    END IF;
END
$$;
DROP INDEX users_email_lower;
CREATE UNIQUE INDEX users_email_same_address ON users (lower(normalize(email, NFC)));
