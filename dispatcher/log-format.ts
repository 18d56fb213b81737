/**
 * Log lines for people and for machines. pino writes JSON lines; on a terminal a small stream
 * turns each into one readable line (no pino-pretty dependency):
 *
 *   14:03:07.512 INFO  dispatcher: listening url=ws://127.0.0.1:7878 transport=ws store=sqlite
 *
 * time (local, to the millisecond), level, the process's name, the message, then the other
 * fields as key=value (strings bare unless they need quotes, objects as JSON); an error's stack
 * follows on indented lines.
 */
import { ErrorCode, FalconetError } from '../protocol/index.js';

export type LogFormat = 'pretty' | 'json';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const COLORS: Record<number, string> = { 10: '90', 20: '90', 30: '32', 40: '33', 50: '31', 60: '35' };
/** Fields every line has that the readable form shows in its own place, or not at all. */
const SKIP = new Set(['level', 'time', 'msg', 'name', 'pid', 'hostname', 'v']);

function check(value: string, where: string): LogFormat {
  if (value === 'pretty' || value === 'json') return value;
  throw new FalconetError(ErrorCode.USAGE, `${where} must be pretty or json (got ${JSON.stringify(value)})`);
}

/**
 * `--log-format pretty|json` (in `args`, before any `--`), else FALCONET_LOG_FORMAT, else pretty
 * on a terminal and JSON otherwise.
 */
export function resolveLogFormat(args: readonly string[], env: NodeJS.ProcessEnv, tty: boolean): LogFormat {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--') break;
    if (a === '--log-format') return check(args[i + 1] ?? '', '--log-format');
    if (a.startsWith('--log-format=')) return check(a.slice('--log-format='.length), '--log-format');
  }
  if (env.FALCONET_LOG_FORMAT) return check(env.FALCONET_LOG_FORMAT, 'FALCONET_LOG_FORMAT');
  return tty ? 'pretty' : 'json';
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

function value(v: unknown): string {
  if (typeof v === 'string') return v !== '' && /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v === null || typeof v !== 'object') return String(v);
  return JSON.stringify(v);
}

/** One pino JSON line as one readable line (and an error's stack below it). Not JSON: as it is. */
export function formatLogLine(line: string, color = false): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.endsWith('\n') ? line : `${line}\n`;
  }
  if (o === null || typeof o !== 'object') return line.endsWith('\n') ? line : `${line}\n`;
  const level = typeof o.level === 'number' ? o.level : 30;
  const d = new Date(typeof o.time === 'number' ? o.time : Date.now());
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  const label = (LEVELS[level] ?? String(level)).padEnd(5);
  let out = `${time} ${color ? `\x1b[${COLORS[level] ?? '0'}m${label}\x1b[0m` : label} ${o.name ? `${String(o.name)}: ` : ''}${o.msg === undefined ? '' : String(o.msg)}`;
  let stack = '';
  for (const [k, v] of Object.entries(o)) {
    if (SKIP.has(k) || v === undefined) continue;
    const err = v as { message?: unknown; stack?: unknown } | null;
    if (err !== null && typeof err === 'object' && typeof err.stack === 'string') {
      out += ` ${k}=${value(err.message ?? '')}`;
      stack += `\n    ${err.stack.split('\n').join('\n    ')}`;
    } else out += ` ${k}=${value(v)}`;
  }
  return `${out}${level >= 50 ? stack : ''}\n`;
}

/** A pino destination that writes readable lines to `dest` (a pino.destination). */
export function prettyStream(dest: { write(s: string): unknown }, color: boolean): { write(line: string): void } {
  return {
    write(line: string) {
      dest.write(formatLogLine(line, color));
    },
  };
}
