DROP TABLE IF EXISTS sagas_now, sagas_hot, saga_due;
CREATE TABLE sagas_now (order_id text PRIMARY KEY, status text NOT NULL, step text NOT NULL, deadline timestamptz,
  state jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
  traceparent text, customer_id text, version bigint NOT NULL DEFAULT 0, published bigint NOT NULL DEFAULT 0);
CREATE INDEX ON sagas_now (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX ON sagas_now (status);
CREATE INDEX ON sagas_now (customer_id, created_at DESC);
CREATE INDEX ON sagas_now (created_at DESC, order_id DESC);
CREATE INDEX sagas_now_unpub ON sagas_now (updated_at) WHERE published < version;
CREATE TABLE sagas_hot (order_id text PRIMARY KEY, status text NOT NULL, step text NOT NULL,
  state jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
  traceparent text, customer_id text, version bigint NOT NULL DEFAULT 0, published bigint NOT NULL DEFAULT 0) WITH (fillfactor = 50);
CREATE INDEX ON sagas_hot (status);
CREATE INDEX ON sagas_hot (customer_id, created_at DESC);
CREATE INDEX ON sagas_hot (created_at DESC, order_id DESC);
CREATE TABLE saga_due (order_id text PRIMARY KEY, deadline timestamptz, publish_after timestamptz) WITH (fillfactor = 70);
CREATE INDEX ON saga_due (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX ON saga_due (publish_after) WHERE publish_after IS NOT NULL;
-- 30000 sagas, finished
INSERT INTO sagas_now (order_id, status, step, state, customer_id, version, published)
SELECT 'o'||i, CASE WHEN i%5=0 THEN 'REJECTED' ELSE 'CONFIRMED' END, 'done',
  jsonb_build_object('version', 5, 'pad', repeat(md5(i::text), 45)), 'c'||(i%80), 5, 5 FROM generate_series(1,30000) i;
INSERT INTO sagas_hot (order_id, status, step, state, customer_id, version, published)
SELECT 'o'||i, CASE WHEN i%5=0 THEN 'REJECTED' ELSE 'CONFIRMED' END, 'done',
  jsonb_build_object('version', 5, 'pad', repeat(md5(i::text), 45)), 'c'||(i%80), 5, 5 FROM generate_series(1,30000) i;
INSERT INTO saga_due (order_id) SELECT 'o'||i FROM generate_series(1,30000) i;
VACUUM ANALYZE;
