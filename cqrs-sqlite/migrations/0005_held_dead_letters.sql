-- Sequenced dead letters: an event of a stream parked behind an earlier dead letter of that
-- stream is kept as 'held' until the letters before it are handled or removed. SQLite cannot
-- change a CHECK constraint in place, so the table is rebuilt with its rows and indexes.
CREATE TABLE dead_letters_next (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    subscriber TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    event      TEXT    NOT NULL CHECK (json_valid(event)),
    error      TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    parked_at  TEXT    NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('parked', 'retry_requested', 'held'))
) STRICT;

INSERT INTO dead_letters_next (seq, id, subscriber, position, event, error, attempts, parked_at, status)
SELECT seq, id, subscriber, position, event, error, attempts, parked_at, status FROM dead_letters;

DROP TABLE dead_letters;
ALTER TABLE dead_letters_next RENAME TO dead_letters;

CREATE INDEX dead_letters_by_subscriber ON dead_letters (subscriber, seq);
CREATE UNIQUE INDEX dead_letters_by_event ON dead_letters (subscriber, position);
