-- Complete blocks of a long stream's events, also kept packed in one row each: versions
-- first_version..=last_version (500 of them, the first a multiple of 500 plus one), one schema
-- version, the types and the payloads each joined by the record separator 0x1E in version
-- order. A load reads a block as one row instead of 500 (a third of the server's time for a
-- long stream); `events` stays the record, and a block is only a second copy of its rows.
--
-- Blocks are written by the loads that first read a complete block (see
-- PgEventStore::read_stream_range_into), under a share lock on its rows, and forgotten by the
-- triggers below whenever rows of `events` are updated, deleted or truncated (the store never
-- does; this is for hand edits), so that a block never outlives the rows it was made from.
CREATE TABLE event_blocks (
    stream_category TEXT NOT NULL,
    stream_id       TEXT NOT NULL,
    first_version   BIGINT NOT NULL,
    last_version    BIGINT NOT NULL,
    schema_version  INTEGER NOT NULL,
    types           TEXT NOT NULL,
    payloads        TEXT NOT NULL,
    packed_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_category, stream_id, first_version),
    CHECK (last_version >= first_version)
);

-- The schema is the events table's own (a hand edit may come from a session whose search_path
-- is another schema).
CREATE FUNCTION event_blocks_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE format('TRUNCATE %I.event_blocks', TG_TABLE_SCHEMA);
    ELSE
        EXECUTE format(
            'DELETE FROM %I.event_blocks AS b USING (%s) AS e '
            'WHERE b.stream_category = e.stream_category AND b.stream_id = e.stream_id '
            'AND e.stream_version BETWEEN b.first_version AND b.last_version',
            TG_TABLE_SCHEMA,
            CASE WHEN TG_OP = 'UPDATE'
                THEN 'SELECT stream_category, stream_id, stream_version FROM gone '
                     'UNION SELECT stream_category, stream_id, stream_version FROM came'
                ELSE 'SELECT stream_category, stream_id, stream_version FROM gone'
            END);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_forget_blocks_on_update AFTER UPDATE ON events
    REFERENCING OLD TABLE AS gone NEW TABLE AS came
    FOR EACH STATEMENT EXECUTE FUNCTION event_blocks_forget();
CREATE TRIGGER events_forget_blocks_on_delete AFTER DELETE ON events
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION event_blocks_forget();
CREATE TRIGGER events_forget_blocks_on_truncate AFTER TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION event_blocks_forget();
