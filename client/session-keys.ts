/**
 * Where the CLI keeps the keys of the sessions it opened, so that `falconet watch S` and
 * `falconet cancel --session S` work later from the same account with nothing to paste: one file
 * per session, `<state dir>/session-keys/<id>`, readable by the owner only (a key is as secret as
 * a token: with the client token it reads and cancels the session). The state dir is
 * `FALCONET_STATE_DIR`, else `$XDG_STATE_HOME/falconet`, else `~/.local/state/falconet`.
 * `--session-key`/`FALCONET_SESSION_KEY` take precedence for sessions opened elsewhere.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** Keys older than this are removed when another is saved: the dispatcher forgets sessions sooner (--retention). */
const KEEP_MS = 30 * 24 * 3600 * 1000;

/** The directory of saved keys. */
export function sessionKeysDir(env: NodeJS.ProcessEnv = process.env): string {
  const state = env.FALCONET_STATE_DIR || join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'falconet');
  return join(state, 'session-keys');
}

/** A session id as a file name: any id is safe (no `/`, no `..`). */
function fileOf(dir: string, sessionId: string): string {
  return join(dir, encodeURIComponent(sessionId).replace(/^\./, '%2E'));
}

/** The key saved for `sessionId`, if this account opened it here. */
export function loadSessionKey(sessionId: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  try {
    const key = readFileSync(fileOf(sessionKeysDir(env), sessionId), 'utf8').trim();
    return key === '' ? undefined : key;
  } catch {
    return undefined;
  }
}

/** The key to show for `session`: the one given (--session-key), else the one saved when this account opened it. */
export function keyFor(given: { sessionKey?: string }, session: string): string | undefined {
  return given.sessionKey ?? loadSessionKey(session);
}

/**
 * Saves a session's key (owner-only file in an owner-only directory) and drops keys older than
 * 30 days. Returns a warning instead of throwing: a key that cannot be saved costs only the
 * convenience (the key is still printed on request), never the command.
 */
export function saveSessionKey(sessionId: string, key: string, env: NodeJS.ProcessEnv = process.env): string | null {
  const dir = sessionKeysDir(env);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(fileOf(dir, sessionId), `${key}\n`, { mode: 0o600 });
  } catch (err) {
    return `could not save the key of session ${sessionId} in ${dir} (${(err as Error).message}); pass --session-key to come back to it`;
  }
  try {
    const now = Date.now();
    for (const name of readdirSync(dir)) {
      const file = join(dir, name);
      if (now - statSync(file).mtimeMs > KEEP_MS) rmSync(file, { force: true });
    }
  } catch {
    // Pruning is housekeeping: a race with another CLI process removing the same file is harmless.
  }
  return null;
}
