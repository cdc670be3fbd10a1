-- The order a claim places, chosen before the claim: a placed order is its own answer (found by
-- this id), so the answer is no longer written after the order, and a crash between the two
-- cannot leave a placed order whose key looks abandoned.
ALTER TABLE idempotency ADD COLUMN IF NOT EXISTS resource text;
