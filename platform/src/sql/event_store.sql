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

CREATE TABLE IF NOT EXISTS snapshots
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
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS events_outbox ON events;
CREATE TRIGGER events_outbox AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION events_to_outbox();
