-- Payloads and metadata are kept as `json`, the text the writer sent, rather than `jsonb`.
-- Every read of the store returns them as text, and turning `jsonb` back into text costs the
-- server about as much as finding the row (a load of a long stream or a replay is mostly that);
-- `json` is returned as it is. An append still checks that the text is valid JSON. The
-- operators (`->`, `->>`, `#>`) work on both; cast to jsonb (`payload::jsonb`) for containment
-- queries or a GIN index on an expression.
ALTER TABLE events
    ALTER COLUMN payload TYPE json,
    ALTER COLUMN metadata TYPE json;
