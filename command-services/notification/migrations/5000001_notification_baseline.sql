-- The notification service's own facts, learned from events (it never asks other services).

-- Who to write to: from CustomerRegistered. Events are immutable, so the first write wins.
CREATE TABLE IF NOT EXISTS contacts
(
    customer_id text PRIMARY KEY,
    name        text        NOT NULL,
    email       text        NOT NULL,
    learned_at  timestamptz NOT NULL DEFAULT now()
);

-- Whose order it is and what it costs: from OrderPlaced.
CREATE TABLE IF NOT EXISTS orders
(
    order_id    text PRIMARY KEY,
    customer_id text        NOT NULL,
    total_cents bigint      NOT NULL,
    currency    text        NOT NULL,
    learned_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per e-mail the SMTP server accepted, keyed by the id of the event that caused it:
-- a redelivered event finds its row and sends nothing.
CREATE TABLE IF NOT EXISTS sent
(
    message_id  text PRIMARY KEY,
    event_type  text        NOT NULL,
    order_id    text        NOT NULL,
    customer_id text        NOT NULL,
    recipient   text        NOT NULL,
    subject     text        NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS sent_by_order ON sent (order_id, sent_at);
