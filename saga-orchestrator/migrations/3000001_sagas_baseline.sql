-- One row per saga (= per order). `state` is the full saga (steps, lines, history) as JSON;
-- the columns beside it are what queries and the timer need.
CREATE TABLE IF NOT EXISTS sagas
(
    order_id   text PRIMARY KEY,
    status     text        NOT NULL,
    step       text        NOT NULL,
    deadline   timestamptz,
    state      jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- The trace the saga belongs to: the `traceparent` of the span that last moved it, so that a
-- deadline firing later continues the order's trace.
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS traceparent text;
CREATE INDEX IF NOT EXISTS sagas_deadline ON sagas (deadline) WHERE deadline IS NOT NULL;
-- The sagas-by-status gauge counts from this index alone, not from the (large) rows.
CREATE INDEX IF NOT EXISTS sagas_status ON sagas (status);
-- Operators search sagas by customer and page them newest first (the dashboard).
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS customer_id text;
UPDATE sagas SET customer_id = COALESCE(state -> 'data' ->> 'customer_id', state ->> 'customer_id')
 WHERE customer_id IS NULL;
CREATE INDEX IF NOT EXISTS sagas_customer ON sagas (customer_id, created_at DESC);
CREATE INDEX IF NOT EXISTS sagas_created ON sagas (created_at DESC, order_id DESC);
