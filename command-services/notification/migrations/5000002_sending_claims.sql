-- An e-mail is claimed before it is sent: one row per event whose e-mail an instance is sending,
-- until its `sent` row is written in the same transaction that deletes the claim. Another
-- instance given the same event meanwhile (a rebalance) waits while the claim is fresh, and
-- takes it over only once it is older than the lease (its holder died before sending or
-- recording).
CREATE TABLE sending
(
    message_id text PRIMARY KEY,
    claimed_by text        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
