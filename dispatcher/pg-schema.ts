/**
 * The PostgreSQL layer of the store: schema, migrations, the commit function, partitioning of
 * sessions, and the mapping of PostgreSQL (and connection) errors to our codes.
 *
 * Every table is created at version 1, including those only several dispatchers on one database
 * use (partitions, dispatchers, inbox, uid_blocks): the schema then has one shape whether one
 * dispatcher or many run on it. Every row of session data carries its partition
 * (`partitionOf(session)`), the unit that dispatchers lease and that fences late writes.
 */
import type pg from 'pg';
import { ErrorCode, FalconetError } from '../protocol/index.js';

export const SCHEMA_VERSION = 2;

/**
 * Partitions sessions hash into. Fixed for the life of a database (rows carry it), so chosen
 * generously: far more than dispatchers will ever run, so that shares stay even as they come and go.
 */
export const PARTITIONS = 256;

/** SQLSTATE raised by falconet_commit when its fence does not hold (class FN: ours). */
export const FENCED_SQLSTATE = 'FN001';

/** The advisory lock key (any constant) under which migrations run: "falconet" in ASCII, truncated. */
const MIGRATION_LOCK = 0x66616c636f6e6574n;

/** The partition of a session: FNV-1a 32-bit over its id's UTF-8 bytes, mod PARTITIONS. */
export function partitionOf(sessionId: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < sessionId.length; i++) {
    const c = sessionId.charCodeAt(i);
    if (c < 0x80) {
      h = Math.imul(h ^ c, 0x01000193);
      continue;
    }
    // Rare (ids are ASCII in practice): hash the rest as UTF-8, as the definition says.
    for (const b of Buffer.from(sessionId.slice(i), 'utf8')) h = Math.imul(h ^ b, 0x01000193);
    break;
  }
  return (h >>> 0) % PARTITIONS;
}

/**
 * PostgreSQL text cannot hold NUL, which ids from the wire may contain (SQLite takes them): every
 * id, key and session id is stored through this injective escape (NUL → \u0001 0, \u0001 →
 * \u0001 1), a no-op for ids without either, and read back through fromPgText. Queries by such
 * a column must escape their argument the same way.
 */
export function toPgText(s: string): string {
  return s.includes('\u0000') || s.includes('\u0001') ? s.replace(/[\u0000\u0001]/g, (c) => (c === '\u0000' ? '\u00010' : '\u00011')) : s;
}

/** The inverse of toPgText. */
export function fromPgText(s: string): string {
  return s.includes('\u0001') ? s.replace(/\u0001([01])/g, (_, d: string) => (d === '0' ? '\u0000' : '\u0001')) : s;
}

/** The commit in one round trip: column arrays in, every change applied with `unnest`. */
const COMMIT_FUNCTION = `
CREATE OR REPLACE FUNCTION falconet_commit(
  fence_owner text, fence_ids int[], fence_epochs bigint[],
  t_session text[], t_uid bigint[], t_partition int[], t_id text[], t_spec bytea[], t_state smallint[],
  t_attempt int[], t_lost int[], t_executor text[], t_submitted bigint[], t_dispatched bigint[],
  r_session text[], r_seq bigint[], r_uid bigint[], r_partition int[], r_result bytea[],
  ds_id text[],
  s_id text[], s_partition int[], s_created bigint[], s_acked bigint[], s_lease bigint[], s_key text[],
  e_owner text, e_id text[], e_info bytea[], e_registered bigint[], de_id text[],
  i_id text[], i_record text[], i_at bigint[], di_id text[],
  m_key text[], m_result bytea[], m_at bigint[], dm_before bigint,
  ib_uid bigint[], ib_attempt int[],
  in_uid bigint[], in_attempt int[], in_partition int[], in_executor text[], in_result bytea[],
  c_key text, c_value text
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  held int;
BEGIN
  -- The fence first: a dispatcher that lost a partition writes nothing of this batch.
  IF cardinality(fence_ids) > 0 THEN
    PERFORM 1 FROM partitions WHERE id = ANY(fence_ids) ORDER BY id FOR SHARE;
    SELECT count(*) INTO held FROM partitions p JOIN unnest(fence_ids, fence_epochs) AS f(id, epoch)
      ON p.id = f.id WHERE p.owner = fence_owner AND p.epoch = f.epoch;
    IF held <> cardinality(fence_ids) THEN
      RAISE EXCEPTION USING ERRCODE = '${FENCED_SQLSTATE}',
        MESSAGE = format('fenced: %s no longer owns %s of the %s partitions it writes', fence_owner, cardinality(fence_ids) - held, cardinality(fence_ids));
    END IF;
  END IF;
  -- The spec is written by the first insert only; later writes of a row change its state.
  INSERT INTO tasks (session, uid, partition, id, spec, state, attempt, lost, executor, submitted_at, dispatched_at)
    SELECT * FROM unnest(t_session, t_uid, t_partition, t_id, t_spec, t_state, t_attempt, t_lost, t_executor, t_submitted, t_dispatched)
    ON CONFLICT (session, uid) DO UPDATE SET state = excluded.state, attempt = excluded.attempt,
      lost = excluded.lost, executor = excluded.executor, dispatched_at = excluded.dispatched_at;
  INSERT INTO results (session, seq, uid, partition, result)
    SELECT * FROM unnest(r_session, r_seq, r_uid, r_partition, r_result) ON CONFLICT DO NOTHING;
  -- After the task rows: a collected session's delete must see its final rows.
  IF cardinality(ds_id) > 0 THEN
    DELETE FROM tasks WHERE session = ANY(ds_id);
    DELETE FROM results WHERE session = ANY(ds_id);
    DELETE FROM sessions WHERE id = ANY(ds_id);
  END IF;
  INSERT INTO sessions (id, partition, created_at, acked, lease_ms, key)
    SELECT * FROM unnest(s_id, s_partition, s_created, s_acked, s_lease, s_key)
    ON CONFLICT (id) DO UPDATE SET acked = excluded.acked, lease_ms = excluded.lease_ms;
  -- An executor record is dropped by the dispatcher that wrote it, or by anyone once that one is
  -- gone: a dispatcher that adopted attempts from a dead one must not delete the record of an
  -- executor now registered with a third.
  DELETE FROM executors WHERE id = ANY(de_id) AND (dispatcher IS NULL OR dispatcher = e_owner
    OR dispatcher NOT IN (SELECT id FROM dispatchers WHERE seen_at > now() - interval '1 minute'));
  INSERT INTO executors (id, dispatcher, info, registered_at, seen_at)
    SELECT u.id, e_owner, u.info, u.at, now() FROM unnest(e_id, e_info, e_registered) AS u(id, info, at)
    ON CONFLICT (id) DO UPDATE SET dispatcher = excluded.dispatcher, info = excluded.info,
      registered_at = excluded.registered_at, seen_at = excluded.seen_at;
  DELETE FROM instances WHERE id = ANY(di_id);
  INSERT INTO instances (id, record, updated_at) SELECT * FROM unnest(i_id, i_record, i_at)
    ON CONFLICT (id) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at;
  INSERT INTO memo (key, result, at) SELECT * FROM unnest(m_key, m_result, m_at)
    ON CONFLICT (key) DO UPDATE SET result = excluded.result, at = excluded.at;
  IF dm_before IS NOT NULL THEN DELETE FROM memo WHERE at < dm_before; END IF;
  -- Results for another dispatcher's partitions (its executor moved here): the owner applies them.
  INSERT INTO inbox (uid, attempt, partition, executor, result)
    SELECT * FROM unnest(in_uid, in_attempt, in_partition, in_executor, in_result) ON CONFLICT DO NOTHING;
  IF cardinality(ib_uid) > 0 THEN
    DELETE FROM inbox i USING unnest(ib_uid, ib_attempt) AS d(uid, attempt) WHERE i.uid = d.uid AND i.attempt = d.attempt;
  END IF;
  IF c_key IS NOT NULL THEN
    INSERT INTO falconet_meta (key, value) VALUES (c_key, c_value) ON CONFLICT (key) DO UPDATE SET value = excluded.value;
  END IF;
END $$`;

/** Drain orders from the provisioner's leader, carried out by whichever dispatcher holds the executor (fleet-exchange.ts). */
const DRAINS = 'CREATE TABLE drains (executor text PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())';

/** The latest version, created on a fresh database in one transaction. */
const SCHEMA = `
CREATE TABLE partitions (id int PRIMARY KEY, owner text, epoch bigint NOT NULL DEFAULT 0, lease_until timestamptz);
INSERT INTO partitions (id) SELECT generate_series(0, ${PARTITIONS - 1});
-- queued, executors, idle: what each dispatcher last reported, for moving idle executors to work (cluster.ts);
-- fleet: its report for the provisioner (JSON, provisioner/fleet.ts).
CREATE TABLE dispatchers (id text PRIMARY KEY, url text NOT NULL, started_at timestamptz NOT NULL, seen_at timestamptz NOT NULL,
  queued bigint NOT NULL DEFAULT 0, executors int NOT NULL DEFAULT 0, idle int NOT NULL DEFAULT 0, fleet text);
${DRAINS};
-- lease_ms is bigint: the protocol allows client leases up to 30 days, more than an int of ms.
CREATE TABLE sessions (id text PRIMARY KEY, partition int NOT NULL, created_at bigint, acked bigint, lease_ms bigint, key text);
-- A task row is updated in place as it is dispatched, requeued, re-dispatched. fillfactor leaves
-- room in each page, so the new row version lands in the same page and, no indexed column
-- changing, is a HOT update: no new index entries, and the old version is pruned in-page
-- without waiting for vacuum. The queue table's bloat stays bounded under churn.
CREATE TABLE tasks (
  session text, uid bigint, partition int NOT NULL, id text, spec bytea, state smallint, attempt int,
  lost int, executor text, submitted_at bigint, dispatched_at bigint, PRIMARY KEY (session, uid)
) WITH (fillfactor = 70);
CREATE INDEX tasks_partition ON tasks (partition);
CREATE TABLE results (session text, seq bigint, uid bigint, partition int NOT NULL, result bytea, PRIMARY KEY (session, seq));
CREATE INDEX results_partition ON results (partition);
CREATE TABLE executors (id text PRIMARY KEY, dispatcher text, info bytea, registered_at bigint, seen_at timestamptz);
CREATE TABLE instances (id text PRIMARY KEY, record text, updated_at bigint);
CREATE TABLE memo (key text PRIMARY KEY, result bytea, at bigint);
CREATE TABLE inbox (
  uid bigint, attempt int, partition int NOT NULL, executor text, result bytea, at timestamptz DEFAULT now(),
  PRIMARY KEY (uid, attempt));
CREATE SEQUENCE uid_blocks;
${COMMIT_FUNCTION};
`;

/**
 * Steps from each older schema to the next, applied in order at start, in the transaction that
 * holds the migration lock, with the version they bring. A fresh database gets SCHEMA directly.
 */
const MIGRATIONS: Record<number, string> = {
  // 1 → 2: the provisioner sees the whole cluster (fleet reports, drain orders).
  1: `ALTER TABLE dispatchers ADD COLUMN fleet text; ${DRAINS};`,
};

/**
 * Brings the database to SCHEMA_VERSION, or refuses it (STORE_UNAVAILABLE) when it is newer.
 * Runs in one transaction under an advisory lock: dispatchers starting together migrate one
 * after the other, and the later ones find the work done.
 */
export async function migrate(client: pg.ClientBase, name: string): Promise<void> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK.toString()]);
    await client.query('CREATE TABLE IF NOT EXISTS falconet_meta (key text PRIMARY KEY, value text NOT NULL)');
    const found = await client.query<{ value: string }>(`SELECT value FROM falconet_meta WHERE key = 'schema'`);
    const version = found.rows[0]?.value;
    if (version === undefined) {
      await client.query(SCHEMA);
      await client.query(`INSERT INTO falconet_meta VALUES ('schema', $1)`, [String(SCHEMA_VERSION)]);
    } else if (!Number.isInteger(Number(version)) || Number(version) > SCHEMA_VERSION) {
      throw new FalconetError(ErrorCode.STORE_UNAVAILABLE, `the store ${name} has schema ${version}; this dispatcher reads ${SCHEMA_VERSION} and older: upgrade falconet, or point --store at another database`);
    } else {
      for (let v = Number(version); v < SCHEMA_VERSION; v++) await client.query(MIGRATIONS[v]);
      await client.query(`UPDATE falconet_meta SET value = $1 WHERE key = 'schema'`, [String(SCHEMA_VERSION)]);
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/** SQLSTATEs (and socket errors) that mean "this server or database cannot be used": what to do about each. */
const UNAVAILABLE: Array<[test: (code: string) => boolean, advice: string]> = [
  [(c) => c === '28P01' || c === '28000', 'the server refused the credentials: check the user and password in the URL (or PGPASSWORD, ~/.pgpass)'],
  [(c) => c === '3D000', 'the database does not exist: create it (createdb) or fix the URL'],
  [(c) => ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ECONNRESET', 'ENOENT'].includes(c), 'no PostgreSQL server answers there: check the host and port, and that the server runs'],
  [(c) => c === '57P03' || c === '53300' || c.startsWith('08'), 'the server does not accept connections now (starting, shutting down, or out of connections)'],
  [(c) => c === '42501', 'the user lacks a privilege falconet needs (create tables in the database, or use its tables)'],
];

/**
 * Maps a PostgreSQL failure to a stable code: a server that cannot be used (refused, wrong
 * credentials, unknown database) is STORE_UNAVAILABLE with what to do; a lost fence STORE_FENCED;
 * anything else STORE_FAILED. `name` is the URL without its password.
 */
export function pgStoreError(err: unknown, name: string): FalconetError {
  if (err instanceof FalconetError) return err;
  const e = err as { code?: string; message?: string };
  const code = e.code ?? '';
  const msg = e.message || code || String(err);
  if (code === FENCED_SQLSTATE) return new FalconetError(ErrorCode.STORE_FENCED, `the store ${name} refused a commit: ${msg}`);
  for (const [test, advice] of UNAVAILABLE) {
    if (test(code)) return new FalconetError(ErrorCode.STORE_UNAVAILABLE, `cannot use the store ${name}: ${msg}; ${advice}`);
  }
  if (/timeout/i.test(msg)) return new FalconetError(ErrorCode.STORE_UNAVAILABLE, `cannot use the store ${name}: ${msg}; no PostgreSQL server answers there in time: check the host and port`);
  return new FalconetError(ErrorCode.STORE_FAILED, `the store ${name} failed: ${msg}${code ? ` (${code})` : ''}`);
}

/** The URL for people: the password replaced, so logs and /api/status never show it. */
export function displayName(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/:[^:@/]*@/, ':***@');
  }
}
