-- The trigger no longer records each execution's `command-id` in the inbox. postgres-es 0.5
-- could commit a command's events and then report a conflict, so a retry first looked the id up;
-- this store's writes are one statement (or one transaction with the snapshot), and a conflict
-- means nothing was written. The row cost an insert into the inbox's index per command, kept
-- forever. Rows written before stay (the inbox is never pruned); nothing reads them.
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
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
