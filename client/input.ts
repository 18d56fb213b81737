/**
 * `submit`'s input: tasks as JSON lines, each checked locally (JSON, an object, the task schema
 * with the dispatcher's own taskProblem, ids unique) before anything is submitted. Every task
 * leaves with an id (its own, or `t-<random>-<line>`) and its input line number, so each result can
 * say which line it came from.
 */
import { readFileSync, createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import type { TaskSpec } from '../protocol/index.js';
import { taskProblem } from '../protocol/validate.js';
import { InputError } from './args.js';

export interface Numbered {
  line: number;
  task: TaskSpec;
}

export interface Bad {
  line: number;
  message: string;
}

/** Bad lines printed at most; the rest are counted. */
export const BAD_SHOWN = 20;

const BUILTINS = ['noop', 'sleep'];
const FIELDS = ['id', 'cmd', 'builtin', 'ms', 'shell', 'env', 'cwd', 'stdin', 'timeoutMs', 'maxAttempts', 'priority', 'labels', 'retryOnExit', 'inputs', 'outputs', 'keepSandbox', 'environment'];

/** Why an OS error stops us reading `file`, in words. */
function readProblem(file: string, err: NodeJS.ErrnoException): InputError {
  const why: Record<string, string> = { ENOENT: 'no such file', EISDIR: 'is a directory', EACCES: 'permission denied', EPERM: 'permission denied', ENOTDIR: 'a part of the path is not a directory' };
  return new InputError(`cannot read ${file}: ${why[err.code ?? ''] ?? err.message}`);
}

/** A more helpful message for a few schema complaints (a typo of a field, an unknown builtin). */
function explain(message: string, value: Record<string, unknown>): string {
  const unexpected = /^\/([^:]+): Unexpected property/.exec(message);
  if (unexpected) {
    const near = FIELDS.find((f) => levenshtein(f, unexpected[1]) <= 2);
    return `${message}${near ? `; did you mean "${near}"?` : ''} (fields: ${FIELDS.join(', ')})`;
  }
  if (message.startsWith('/builtin:')) return `${message}: builtin must be one of ${BUILTINS.join(', ')} (got ${JSON.stringify(value.builtin)})`;
  return message;
}

function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) for (let j = 1; j <= b.length; j++) d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

/** Checks one line: null for a blank one, a task, or what is wrong with it. */
export function checkLine(text: string, seen: Map<string, number>, line: number): TaskSpec | string | null {
  if (text.trim() === '') return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return `not JSON: ${(err as Error).message}`;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return `a task must be a JSON object (got ${Array.isArray(value) ? 'an array' : JSON.stringify(value)})`;
  const problem = taskProblem(value);
  if (problem) return explain(problem, value as Record<string, unknown>);
  const id = (value as TaskSpec).id;
  if (id !== undefined) {
    const first = seen.get(id);
    if (first !== undefined) return `duplicate id ${JSON.stringify(id)} (also on line ${first})`;
    seen.set(id, line);
  }
  return value as TaskSpec;
}

/**
 * Gives a task without an id one that ends in its line number. The task is one {@link checkLine}
 * just parsed, so it is given the id in place (no copy per task: a million for a million lines).
 */
export function idFor(prefix: string) {
  return (t: TaskSpec, line: number): TaskSpec => {
    if (t.id === undefined) t.id = `${prefix}-${line}`;
    return t;
  };
}

export function newPrefix(): string {
  return `t-${randomBytes(6).toString('hex')}`;
}

/** A whole file, checked: every task (with an id) and every bad line. Throws InputError when it cannot be read. */
export function readTaskFile(file: string, prefix: string): { tasks: Numbered[]; bad: Bad[] } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw readProblem(file, err as NodeJS.ErrnoException);
  }
  const seen = new Map<string, number>();
  const withId = idFor(prefix);
  const tasks: Numbered[] = [];
  const bad: Bad[] = [];
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((raw, i) => {
    const r = checkLine(raw.replace(/\r$/, ''), seen, i + 1);
    if (r === null) return;
    if (typeof r === 'string') bad.push({ line: i + 1, message: r });
    else tasks.push({ line: i + 1, task: withId(r, i + 1) });
  });
  return { tasks, bad };
}

/**
 * Tasks from stdin (or a FIFO) as they come. A bad line is reported through `onBad`; reading then
 * stops, unless `skipInvalid`.
 */
export async function* streamTasks(file: string, prefix: string, skipInvalid: boolean, onBad: (b: Bad) => void): AsyncGenerator<Numbered> {
  const input = file === '-' ? process.stdin : createReadStream(file);
  const opened = new Promise<void>((resolve, reject) => {
    if (file === '-') return resolve();
    input.once('error', (err: Error) => reject(readProblem(file, err as NodeJS.ErrnoException)));
    input.once('readable', () => resolve());
  });
  await opened;
  const lines = createInterface({ input, crlfDelay: Infinity });
  const seen = new Map<string, number>();
  const withId = idFor(prefix);
  let n = 0;
  try {
    for await (const raw of lines) {
      n++;
      const r = checkLine(raw, seen, n);
      if (r === null) continue;
      if (typeof r === 'string') {
        onBad({ line: n, message: r });
        if (!skipInvalid) return;
        continue;
      }
      yield { line: n, task: withId(r, n) };
    }
  } finally {
    lines.close();
  }
}

/** Prints bad lines as `F:LINE: message`, the first 20, then a count. */
export function reportBad(file: string, bad: Bad[]): void {
  const name = file === '-' ? '<stdin>' : file;
  let out = bad
    .slice(0, BAD_SHOWN)
    .map((b) => `${name}:${b.line}: ${b.message}\n`)
    .join('');
  if (bad.length > BAD_SHOWN) out += `… and ${(bad.length - BAD_SHOWN).toLocaleString('en-US')} more bad line(s)\n`;
  process.stderr.write(out);
}
