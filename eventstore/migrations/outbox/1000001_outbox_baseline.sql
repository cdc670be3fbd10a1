-- Messages waiting for Kafka. The relay publishes rows in id order and deletes them once Kafka
-- acknowledged them, so a row committed late (a "hole" in the id
-- sequence) is simply picked up by a later pass: nothing is skipped because nothing tracks a
-- high-water mark. See messaging/src/outbox.rs for the protocol.
CREATE TABLE IF NOT EXISTS outbox
(
    id             bigserial PRIMARY KEY,
    message_id     uuid        NOT NULL,
    -- event rows: the aggregate and its stream position; direct rows (saga commands): the key
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL DEFAULT 0,
    -- event rows: the domain event type; direct rows: the Avro record full name
    record         text        NOT NULL,
    payload        json        NOT NULL,
    metadata       json        NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now()
);
-- Every row is inserted and soon deleted: vacuum after a few thousand dead rows, not after a
-- fifth of the table (the default), so the relay's scans do not wade through dead rows.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
                        autovacuum_vacuum_cost_delay = 0);

-- The relay's one row: the batch it is sending (row ids) and since when. After a crash its
-- successor reads the topics back from that time and deletes the rows already there.
-- (`instance` named this outbox in the Kafka checkpoints of the transactional relay before.)
CREATE TABLE IF NOT EXISTS outbox_relay
(
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    instance  uuid    NOT NULL DEFAULT gen_random_uuid()
);
ALTER TABLE outbox_relay ADD COLUMN IF NOT EXISTS sending bigint[] NOT NULL DEFAULT '{}';
ALTER TABLE outbox_relay ADD COLUMN IF NOT EXISTS sending_since timestamptz;
INSERT INTO outbox_relay DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Rows the relay failed to map, encode or get accepted by Kafka a few times, with the last error.
-- Later rows of the same aggregate stay in the outbox until the dead row is dealt with, so no
-- stream reaches Kafka with a gap. To retry a row once fixed, move it back with its own id (the
-- relay sends in id order, so it goes out before the rows that waited behind it):
--   WITH d AS (DELETE FROM outbox_dead WHERE id = <id> RETURNING *)
--   INSERT INTO outbox (id, message_id, aggregate_type, aggregate_id, sequence, record, payload, metadata, created_at)
--   SELECT id, message_id, aggregate_type, aggregate_id, sequence, record, payload, metadata, created_at FROM d;
-- To give up on it, delete it from here: the waiting rows then go out.
CREATE TABLE IF NOT EXISTS outbox_dead
(
    id             bigint PRIMARY KEY,
    message_id     uuid        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    record         text        NOT NULL,
    payload        json        NOT NULL,
    metadata       json        NOT NULL,
    created_at     timestamptz NOT NULL,
    error          text        NOT NULL,
    attempts       integer     NOT NULL,
    died_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_dead_aggregate ON outbox_dead (aggregate_type, aggregate_id);

-- Consumers record each message id in the same transaction as its effect.
CREATE TABLE IF NOT EXISTS inbox
(
    message_id   text PRIMARY KEY,
    topic        text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
