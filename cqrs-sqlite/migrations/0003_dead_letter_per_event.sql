-- One dead letter per subscriber and event: a park repeated (a crash between parking and moving
-- the checkpoint, a retry that fails again) updates the letter there is instead of adding one.
-- Duplicates parked before this migration keep their newest letter.
DELETE FROM dead_letters
WHERE EXISTS (
    SELECT 1 FROM dead_letters AS newer
    WHERE newer.subscriber = dead_letters.subscriber
      AND newer.position = dead_letters.position
      AND newer.seq > dead_letters.seq
);

CREATE UNIQUE INDEX dead_letters_by_event ON dead_letters (subscriber, position);
