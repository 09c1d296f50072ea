-- The all-stream watermark: every transaction below it has ended, so readers may pass events
-- below it without ever skipping one that commits later.
--
-- It is pg_snapshot_xmin(pg_current_snapshot()), the oldest transaction in flight, except that
-- transactions seen running in another database are passed over: a session writes only its
-- own database, so they cannot bring events to these tables. A transaction that is not seen
-- (it may have ended after the snapshot was taken) is kept, so the watermark never passes one
-- whose events the snapshot cannot see yet. The function is STABLE so that it uses the
-- calling statement's snapshot, the one that statement's rows are read with.
CREATE FUNCTION events_watermark() RETURNS xid8 LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN pg_snapshot_xmin(s) = pg_snapshot_xmax(s) THEN pg_snapshot_xmax(s)
        ELSE COALESCE(
            (SELECT min(x) FROM pg_snapshot_xip(s) AS x
             WHERE NOT EXISTS (
                 SELECT 1 FROM pg_stat_get_activity(NULL) AS a
                 WHERE a.backend_xid = (x::text::int8 % 4294967296)::text::xid
                   AND a.datid IS DISTINCT FROM (SELECT oid FROM pg_database WHERE datname = current_database()))),
            pg_snapshot_xmax(s))
    END
    FROM pg_current_snapshot() AS s
$$;
