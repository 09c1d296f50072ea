-- The event store of cqrs-postgres. Every name is unqualified: the tables land in the schema
-- the connection's search_path selects, so several services or tenants can share a database.

-- The all-stream. `position` is handed out at insert time, before commit, so concurrent
-- writers commit out of position order; `tx_id` (the writing transaction's id) lets readers
-- stay below every in-flight transaction and never skip an event (see read_all).
CREATE TABLE events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id           XID8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_category TEXT NOT NULL,
    stream_id       TEXT NOT NULL,
    stream_version  BIGINT NOT NULL CHECK (stream_version > 0),
    event_id        UUID NOT NULL,
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 0),
    payload         JSONB NOT NULL,
    metadata        JSONB NOT NULL DEFAULT '{}',
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_key UNIQUE (stream_category, stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

CREATE INDEX events_tx_position_idx ON events (tx_id, position);

-- Command ids seen per stream, written in the appending statement: a repeat returns this.
CREATE TABLE commands (
    stream_category TEXT NOT NULL,
    stream_id       TEXT NOT NULL,
    command_id      UUID NOT NULL,
    version         BIGINT NOT NULL,
    position        BIGINT NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_category, stream_id, command_id)
);

CREATE TABLE snapshots (
    stream_category TEXT NOT NULL,
    stream_id       TEXT NOT NULL,
    version         BIGINT NOT NULL,
    schema          INTEGER NOT NULL,
    state           JSONB NOT NULL,
    saved_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_category, stream_id)
);

-- One row per subscriber; `tx` and `position` make up its cursor.
CREATE TABLE checkpoints (
    name       TEXT PRIMARY KEY,
    tx         BIGINT NOT NULL,
    position   BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE dead_letters (
    id              UUID PRIMARY KEY,
    seq             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    subscriber      TEXT NOT NULL,
    stream_category TEXT NOT NULL,
    stream_id       TEXT NOT NULL,
    stream_version  BIGINT NOT NULL,
    position        BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    event           JSONB NOT NULL,
    error           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    parked_at       TIMESTAMPTZ NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('parked', 'retry_requested'))
);

CREATE INDEX dead_letters_subscriber_idx ON dead_letters (subscriber, seq);

-- Lease holders. The advisory lock decides who holds a lease; `epoch` grows with every
-- acquisition and fences out a holder that lost its lock (see PgLeases).
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    epoch       BIGINT NOT NULL,
    holder      TEXT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
