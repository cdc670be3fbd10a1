-- postgres-es tables (one event stream per aggregate instance).
CREATE TABLE IF NOT EXISTS events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- `snapshots_v2`: the first snapshots table held states with events applied twice (fixed in
-- eventstore::es); it is no longer read.
CREATE TABLE IF NOT EXISTS snapshots_v2
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Every stored event is copied into the outbox by a trigger, in the same transaction:
-- an event is either stored and queued for Kafka, or neither. One trigger call per statement,
-- over all the rows it inserted (a command's events are one multi-row INSERT, eventstore::pg_store):
-- one outbox insert in stream order, one inbox insert per kind. No NOTIFY: PostgreSQL takes one
-- lock for the commit of every notifying transaction, which serialized the event store's commits;
-- the writing process wakes its relay itself (messaging::outbox::written), others poll.
CREATE OR REPLACE FUNCTION events_to_outbox_rows() RETURNS trigger AS $$
BEGIN
    INSERT INTO outbox (message_id, aggregate_type, aggregate_id, sequence, record, payload, metadata)
    SELECT md5(aggregate_type || '/' || aggregate_id || '/' || sequence)::uuid,
           aggregate_type, aggregate_id, sequence, event_type, payload, metadata
      FROM new_events
     ORDER BY aggregate_type, aggregate_id, sequence;
    -- Inbox: the message that caused the events is recorded in the same transaction, so its
    -- redelivery is recognised and skipped (eventstore::es::EventStoreOf::handled).
    INSERT INTO inbox (message_id, topic)
    SELECT DISTINCT metadata ->> 'causation-id', 'command' FROM new_events
     WHERE metadata ->> 'causation-id' IS NOT NULL
    ON CONFLICT DO NOTHING;
    -- Every execution carries a fresh command id: after an ambiguous failure the caller can
    -- tell whether its events were committed (see eventstore::es::EventStoreOf::execute).
    INSERT INTO inbox (message_id, topic)
    SELECT DISTINCT metadata ->> 'command-id', 'command-id' FROM new_events
     WHERE metadata ->> 'command-id' IS NOT NULL
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS events_outbox ON events;
CREATE TRIGGER events_outbox AFTER INSERT ON events REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION events_to_outbox_rows();
-- The per-row function of earlier versions.
DROP FUNCTION IF EXISTS events_to_outbox();
