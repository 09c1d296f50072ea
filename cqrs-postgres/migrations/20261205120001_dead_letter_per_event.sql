-- One dead letter per subscriber and event: a park repeated (a crash between parking and moving
-- the checkpoint, a retry that fails again) updates the letter there is instead of adding one.
-- Duplicates parked before this migration keep their newest letter.
DELETE FROM dead_letters AS d
USING dead_letters AS newer
WHERE d.subscriber = newer.subscriber AND d.position = newer.position AND d.seq < newer.seq;

CREATE UNIQUE INDEX dead_letters_subscriber_position_key ON dead_letters (subscriber, position);
