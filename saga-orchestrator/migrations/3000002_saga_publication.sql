-- Which version of each saga reached saga.events. A saga's state is published (`SagaUpdated`)
-- in the transaction that ends it, and otherwise once it has stayed at one version for a while
-- (the publisher in lib.rs), so a saga that runs through its steps in a moment is one record,
-- not one per step. `version` mirrors `state ->> 'version'` for the index below.
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0;
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS published bigint NOT NULL DEFAULT 0;
-- Sagas stored before this: every version was queued with its SagaUpdated.
UPDATE sagas SET version = (state ->> 'version')::bigint, published = (state ->> 'version')::bigint
 WHERE version = 0;
CREATE INDEX IF NOT EXISTS sagas_unpublished ON sagas (updated_at) WHERE published < version;
