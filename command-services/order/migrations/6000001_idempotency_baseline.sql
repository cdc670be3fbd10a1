CREATE TABLE IF NOT EXISTS idempotency
(
    key          text PRIMARY KEY,
    -- sha256 of the request in canonical JSON: the same key must come with the same request
    request_hash text        NOT NULL,
    -- the answer; NULL while the first request is still running
    status       integer,
    body         jsonb,
    -- the answer's headers but for content type and length, e.g. location: {name: value}
    headers      jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
