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
