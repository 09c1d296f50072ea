-- The all-stream watermark (see 20261125000002_watermark.sql), twice corrected:
--
-- 1. On a server in recovery (a hot standby) it refuses, with SQLSTATE CQ001. A standby's
--    pg_current_snapshot() lists none of the transactions in flight on the primary, so no
--    watermark can be told there: the old one passed open transactions, and a subscriber
--    reading there skipped their events for good once they committed.
-- 2. Prepared (two-phase) transactions of another database are passed over, as live ones
--    are: pg_prepared_xacts tells their database. A prepared transaction is in the snapshot
--    until COMMIT PREPARED or ROLLBACK PREPARED, which may be a long time; one of this
--    database is kept, since it may hold events.
--
-- It is PL/pgSQL only to raise the error; as before it is STABLE, so the query inside runs on
-- the calling statement's snapshot, the one that statement's rows are read with.
CREATE OR REPLACE FUNCTION events_watermark() RETURNS xid8 LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'the all-stream cannot be read on a server in recovery (a hot standby)'
            USING ERRCODE = 'CQ001',
                  DETAIL = 'a standby''s snapshots do not list the transactions in flight on the primary, so events of open transactions could be passed over for good',
                  HINT = 'read the all-stream (run subscribers) against the primary';
    END IF;
    RETURN (
        SELECT CASE
            WHEN pg_snapshot_xmin(s) = pg_snapshot_xmax(s) THEN pg_snapshot_xmax(s)
            ELSE COALESCE(
                (SELECT min(x) FROM pg_snapshot_xip(s) AS x
                 WHERE NOT EXISTS (
                     SELECT 1 FROM pg_stat_get_activity(NULL) AS a
                     WHERE a.backend_xid = (x::text::int8 % 4294967296)::text::xid
                       AND a.datid IS DISTINCT FROM (SELECT oid FROM pg_database WHERE datname = current_database()))
                   AND NOT EXISTS (
                     SELECT 1 FROM pg_prepared_xacts AS p
                     WHERE p.transaction = (x::text::int8 % 4294967296)::text::xid
                       AND p.database <> current_database())),
                pg_snapshot_xmax(s))
        END
        FROM pg_current_snapshot() AS s);
END
$$;
