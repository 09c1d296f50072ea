-- Inboxes: ids of events from outside the store (a broker) that a transactional projector has
-- handled, written in the handler's transaction so a redelivery has no second effect.
CREATE TABLE inbox (
    subscriber  TEXT NOT NULL,
    event_id    TEXT NOT NULL CHECK (length(event_id) = 36),
    received_at TEXT NOT NULL,
    PRIMARY KEY (subscriber, event_id)
) STRICT, WITHOUT ROWID;
