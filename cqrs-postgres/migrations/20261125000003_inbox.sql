-- Inboxes: ids of events from outside the store (a broker) that a transactional projector has
-- handled, written in the handler's transaction so a redelivery has no second effect.
CREATE TABLE inbox (
    subscriber  TEXT NOT NULL,
    event_id    UUID NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (subscriber, event_id)
);
