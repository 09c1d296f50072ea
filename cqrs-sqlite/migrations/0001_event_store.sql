-- The event store, snapshots, checkpoints and dead letters of cqrs-sqlite.
-- STRICT tables and CHECK constraints keep raw SQL from storing rows the store could not read back.

-- The all-stream. `position` is the rowid, handed out under the single write lock, so positions
-- follow commit order with no gaps (events are never deleted).
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    event_id       TEXT    NOT NULL UNIQUE CHECK (length(event_id) = 36),
    category       TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL CHECK (schema_version BETWEEN 0 AND 4294967295),
    payload        TEXT    NOT NULL CHECK (json_valid(payload)),
    metadata       TEXT    NOT NULL CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
    recorded_at    TEXT    NOT NULL,
    UNIQUE (category, stream_id, version)
) STRICT;

-- Results of appends made with a command id, for idempotent commands (per stream).
CREATE TABLE commands (
    category   TEXT    NOT NULL,
    stream_id  TEXT    NOT NULL,
    command_id TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    PRIMARY KEY (category, stream_id, command_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE snapshots (
    category  TEXT    NOT NULL,
    stream_id TEXT    NOT NULL,
    version   INTEGER NOT NULL,
    schema    INTEGER NOT NULL,
    state     TEXT    NOT NULL CHECK (json_valid(state)),
    PRIMARY KEY (category, stream_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE checkpoints (
    name       TEXT    NOT NULL PRIMARY KEY,
    tx         INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    updated_at TEXT    NOT NULL
) STRICT, WITHOUT ROWID;

-- `seq` keeps parking order, so that `list` gives the oldest first even after a re-park.
CREATE TABLE dead_letters (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    subscriber TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    event      TEXT    NOT NULL CHECK (json_valid(event)),
    error      TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    parked_at  TEXT    NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('parked', 'retry_requested'))
) STRICT;

CREATE INDEX dead_letters_by_subscriber ON dead_letters (subscriber, seq);
