/**
 * Parses a command's arguments with node:util parseArgs, from the registry's flags, and says
 * what is wrong in falconet's own words ("unknown flag --prot for up; did you mean --port?")
 * rather than the parser's.
 */
import { parseArgs } from 'node:util';
import { ErrorCode, FalconetError } from '../protocol/index.js';
import { closest, flagsOf, parseOptions, type Command } from './registry.js';

export function usage(message: string): never {
  throw new FalconetError(ErrorCode.USAGE, message);
}

/** Bad input the user gave (a file that cannot be read, a bad task line): printed as is, exit 2. */
export class InputError extends Error {}

export interface Parsed {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  positionals: string[];
  help: boolean;
}

/** True when -h/--help comes before any `--`. */
export function wantsHelp(args: string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

export function parseCommand(c: Command, args: string[]): Parsed {
  if (wantsHelp(args)) return { values: {}, positionals: [], help: true };
  const flags = flagsOf(c);
  const byName = new Map(flags.map((f) => [f.name, f]));
  const byShort = new Map(flags.filter((f) => f.short).map((f) => [f.short!, f]));
  const names = flags.map((f) => f.name);
  const see = `see falconet ${c.name} --help`;
  let parsed;
  try {
    // Not strict: falconet checks each token itself below, so its messages are its own (and a
    // value such as `-5` is taken as a value, then judged by the flag's own check).
    parsed = parseArgs({ args, options: parseOptions(c), allowPositionals: true, strict: false, tokens: true });
  } catch (err) {
    usage(`${(err as Error).message}; ${see}`);
  }
  for (const tok of parsed.tokens) {
    if (tok.kind !== 'option') continue;
    const f = tok.rawName.startsWith('--') ? byName.get(tok.name) : byShort.get(tok.rawName.slice(1)) ?? byName.get(tok.name);
    if (!f) {
      const guess = tok.rawName.startsWith('--') ? closest(tok.name, names) : undefined;
      usage(`unknown flag ${tok.rawName} for ${c.name}${guess ? `; did you mean --${guess}?` : `; ${see}`}`);
    }
    if (f.type === 'boolean' && tok.inlineValue) usage(`--${f.name} takes no value (got ${JSON.stringify(tok.rawName + '=' + tok.value)})`);
    if (f.type === 'string') {
      const v = tok.value;
      if (v === undefined) usage(`--${f.name} needs a value${f.arg ? ` (${f.arg})` : ''}; ${see}`);
      // `--file --detach`: a flag where a value belongs, not a value.
      if (!tok.inlineValue && v.startsWith('--') && byName.has(v.slice(2).split('=')[0])) usage(`--${f.name} needs a value${f.arg ? ` (${f.arg})` : ''}, not the flag ${v}`);
    }
  }
  const { min, max } = c.positionals;
  const pos = parsed.positionals;
  if (pos.length > max) usage(max === 0 ? `${c.name} takes no arguments (got ${JSON.stringify(pos[0])}); ${see}` : `unexpected argument ${JSON.stringify(pos[max])} for ${c.name}; ${see}`);
  if (pos.length < min) usage(`${c.name} needs ${c.usage.split(' ').filter((w) => /^[A-Z]/.test(w))[0] ?? 'an argument'}: falconet ${c.name} ${c.usage}`);
  return { values: parsed.values as Parsed['values'], positionals: pos, help: false };
}
