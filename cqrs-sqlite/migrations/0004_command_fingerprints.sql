-- The fingerprint of the request a command id was first used for (a UUID as text), so that the
-- same id with another request is refused. NULL for commands recorded before, or without one:
-- any repeat of those is taken as the same request.
ALTER TABLE commands ADD COLUMN fingerprint TEXT CHECK (fingerprint IS NULL OR length(fingerprint) = 36);
