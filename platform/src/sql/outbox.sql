-- Messages waiting for Kafka. The relay publishes rows in id order and deletes them once
-- Kafka acknowledged them, so a row committed late (a "hole" in the id sequence) is simply
-- picked up by a later pass: nothing is skipped because nothing tracks a high-water mark.
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

-- Consumers record each message id in the same transaction as its effect.
CREATE TABLE IF NOT EXISTS inbox
(
    message_id   text PRIMARY KEY,
    topic        text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
