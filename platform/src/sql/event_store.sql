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
-- platform::es); it is no longer read.
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
-- an event is either stored and queued for Kafka, or neither.
CREATE OR REPLACE FUNCTION events_to_outbox() RETURNS trigger AS $$
BEGIN
    INSERT INTO outbox (message_id, aggregate_type, aggregate_id, sequence, record, payload, metadata)
    VALUES (md5(NEW.aggregate_type || '/' || NEW.aggregate_id || '/' || NEW.sequence)::uuid,
            NEW.aggregate_type, NEW.aggregate_id, NEW.sequence, NEW.event_type, NEW.payload, NEW.metadata);
    PERFORM pg_notify('outbox', '');
    -- Inbox: the message that caused the event is recorded in the same transaction, so its
    -- redelivery is recognised and skipped (platform::es::EventStoreOf::handled).
    IF NEW.metadata ->> 'causation-id' IS NOT NULL THEN
        INSERT INTO inbox (message_id, topic) VALUES (NEW.metadata ->> 'causation-id', 'command')
        ON CONFLICT DO NOTHING;
    END IF;
    -- Every execution carries a fresh command id: after an ambiguous failure the caller can
    -- tell whether its events were committed (see platform::es::EventStoreOf::execute).
    IF NEW.metadata ->> 'command-id' IS NOT NULL THEN
        INSERT INTO inbox (message_id, topic) VALUES (NEW.metadata ->> 'command-id', 'command-id')
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS events_outbox ON events;
CREATE TRIGGER events_outbox AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION events_to_outbox();
