-- Sequenced dead letters: an event of a stream parked behind an earlier dead letter of that
-- stream is kept as 'held' until the letters before it are handled or removed.
ALTER TABLE dead_letters DROP CONSTRAINT IF EXISTS dead_letters_status_check;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_status_check
    CHECK (status IN ('parked', 'retry_requested', 'held'));
