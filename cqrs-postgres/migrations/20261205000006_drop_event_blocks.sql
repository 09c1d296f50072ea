-- Packed blocks are gone: loads read `events` alone. This drops what
-- 20261125000005_event_blocks created (the triggers first, then their function and the table).
DROP TRIGGER IF EXISTS events_forget_blocks_on_update ON events;
DROP TRIGGER IF EXISTS events_forget_blocks_on_delete ON events;
DROP TRIGGER IF EXISTS events_forget_blocks_on_truncate ON events;
DROP FUNCTION IF EXISTS event_blocks_forget();
DROP TABLE IF EXISTS event_blocks;
