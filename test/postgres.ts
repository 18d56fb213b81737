/**
 * A real PostgreSQL for tests and benches: Debian's `postgresql` package (installed with apt-get
 * when missing and we are root), initdb into a fresh temp dir, run as the unprivileged `postgres`
 * user (when we are root) on loopback and a Unix socket in that dir, stopped by its pid.
 *
 * The server is started by spawn() with the user's uid/gid rather than through runuser: the pid
 * we hold is then postgres's own, so stop() signals the server itself and waits for its exit.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import pg from 'pg';
import { ensureDebianPackages } from './helpers.js';

export interface PgServer {
  /** postgres://falconet@127.0.0.1:PORT/falconet: a database made for this server's caller. */
  url: string;
  /** The postmaster's pid. */
  pid: number;
  /** A new empty database on this server; its URL. */
  newDatabase(name: string): Promise<string>;
  /** SIGINT (fast shutdown), waits for the exit, removes the data dir. */
  stop(): Promise<void>;
  /** The last few KB of the server's log (its stderr): deadlock reports name the statements. */
  log(): string;
}

/** How long the server may take to accept connections (initdb is separate). */
const START_MS = 60_000;

/** The directory holding initdb and postgres: PATH first, then Debian's versioned dirs (newest). */
function findBinDir(): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres'))) return dir;
  }
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'postgres'))).sort((a, b) => Number(b) - Number(a));
  return versions.length ? join(root, versions[0], 'bin') : null;
}

/** The uid/gid to run the server as: `postgres` when we are root (initdb refuses root), else ours. */
function runAs(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    return null;
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once `url` accepts a query; rejects when the server exits first or after `ms`. */
async function accepting(url: string, child: ChildProcess, ms: number, log: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  let exited = false;
  child.once('exit', () => (exited = true));
  for (;;) {
    if (exited) throw new Error(`postgres exited while starting: ${log().slice(-2000)}`);
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
    c.on('error', () => {});
    try {
      await c.connect();
      await c.query('SELECT 1');
      await c.end();
      return;
    } catch (err) {
      await c.end().catch(() => {});
      if (Date.now() > deadline) throw new Error(`postgres did not accept connections within ${ms} ms: ${(err as Error).message}; ${log().slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100)); // polling a server that is starting: the event we wait for is its first accept
  }
}

/**
 * Starts a throwaway PostgreSQL (fsync off unless `fsync`: tests need no durability against power
 * loss, benches comparing with SQLite `--sync full` do). Returns `{ skip }` with the reason only when the server cannot
 * be had at all (not installed and not installable); any failure after that throws.
 */
export async function startPostgres(options: { fsync?: boolean } = {}): Promise<PgServer | { skip: string }> {
  let bin = findBinDir();
  if (!bin) {
    const why = ensureDebianPackages(['postgresql'], () => findBinDir() !== null);
    bin = findBinDir();
    if (!bin) return { skip: `no PostgreSQL: ${why ?? 'initdb/postgres not found after install'}` };
  }
  const user = runAs();
  if (process.getuid?.() === 0 && !user) return { skip: 'running as root and there is no postgres user to run the server as (the postgresql package makes it)' };
  const dir = mkdtempSync(join(tmpdir(), 'falconet-pg-'));
  const data = join(dir, 'data');
  const sock = join(dir, 'sock');
  mkdirSync(sock);
  if (user) {
    chownSync(dir, user.uid, user.gid);
    chownSync(sock, user.uid, user.gid);
  }
  const owned = user ? { uid: user.uid, gid: user.gid } : {};
  const env = { ...process.env, LC_ALL: 'C', HOME: dir };
  try {
    execFileSync(join(bin, 'initdb'), ['-D', data, '-U', 'falconet', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale', 'C'], { ...owned, env, stdio: ['ignore', 'ignore', 'pipe'], timeout: 120_000, cwd: dir });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message)}`);
  }
  for (let tries = 0; ; tries++) {
    const port = await freePort();
    const args = ['-D', data, '-k', sock, '-c', 'listen_addresses=127.0.0.1', '-p', String(port), '-c', `fsync=${options.fsync ? 'on' : 'off'}`, '-c', 'max_connections=200'];
    const child = spawn(join(bin, 'postgres'), args, { ...owned, env, cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr!.on('data', (b: Buffer) => (log = (log + b.toString()).slice(-8000)));
    const exit = new Promise<void>((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', () => resolve())));
    const stop = async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
      await exit;
      rmSync(dir, { recursive: true, force: true });
    };
    process.once('exit', () => child.kill('SIGKILL')); // never leave a server behind the test process
    const admin = `postgres://falconet@127.0.0.1:${port}/postgres`;
    try {
      await accepting(admin, child, START_MS, () => log);
    } catch (err) {
      child.kill('SIGKILL');
      await exit;
      if (tries < 2 && /already in use/.test(log)) continue; // the free port was taken in between
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    const newDatabase = async (name: string) => {
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${JSON.stringify(name)}`);
      } finally {
        await c.end();
      }
      return `postgres://falconet@127.0.0.1:${port}/${name}`;
    };
    const url = await newDatabase('falconet');
    return { url, pid: child.pid!, newDatabase, stop, log: () => log };
  }
}

/** One query on a connection of its own (tests and benches reading what the dispatchers wrote). */
export async function query<T extends pg.QueryResultRow = Record<string, unknown>>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(text, values)).rows;
  } finally {
    await c.end();
  }
}
