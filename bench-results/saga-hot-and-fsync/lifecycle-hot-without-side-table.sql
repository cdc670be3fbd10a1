\set n random(1, 2000000000)
BEGIN;
INSERT INTO sagas_hot (order_id,status,step,state,customer_id,version,published) VALUES ('n'||:n,'RUNNING','reserve_stock', jsonb_build_object('version',1,'pad',repeat(md5(:n::text),45)),'c'||(:n%80),1,0) ON CONFLICT DO NOTHING;
COMMIT;
BEGIN;
UPDATE sagas_hot SET step='authorize_payment', state=jsonb_build_object('version',2,'pad',repeat(md5(:n::text),45)), version=2, updated_at=now() WHERE order_id='n'||:n;
COMMIT;
BEGIN;
UPDATE sagas_hot SET step='confirm', state=jsonb_build_object('version',3,'pad',repeat(md5(:n::text),45)), version=3, updated_at=now() WHERE order_id='n'||:n;
COMMIT;
BEGIN;
UPDATE sagas_hot SET step='confirm2', state=jsonb_build_object('version',4,'pad',repeat(md5(:n::text),45)), version=4, updated_at=now() WHERE order_id='n'||:n;
COMMIT;
BEGIN;
UPDATE sagas_hot SET status='CONFIRMED', step='done', state=jsonb_build_object('version',5,'pad',repeat(md5(:n::text),45)), version=5, published=5, updated_at=now() WHERE order_id='n'||:n;
COMMIT;
