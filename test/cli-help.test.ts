/**
 * The CLI's manners (issue 11, item 1): help on every command (`CMD --help`, `-h`, `help CMD`)
 * with every flag, its default and unit, and an example; `--version`; "did you mean" for a
 * mistyped command or flag; usage on stderr; falconet's own messages, not the argument parser's;
 * docs/cli.md generated from the same registry and up to date; the README's flags all in it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { COMMANDS, flagsOf, markdown, allFlagNames } from '../client/registry.js';
import { Procs, runCli } from './helpers.js';

const ROOT = new URL('../../', import.meta.url);

test('every command has help (--help, -h, help CMD): what it does, every flag with its default, an example', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  for (const c of COMMANDS) {
    const long = await runCli(procs, [c.name, '--help']);
    assert.equal(long.code, 0, `${c.name} --help: ${long.stderr}`);
    assert.equal(long.stderr, '');
    assert.match(long.stdout, new RegExp(`^falconet ${c.name}: `));
    assert.match(long.stdout, new RegExp(`\\nusage: falconet ${c.name}`));
    for (const f of flagsOf(c)) {
      assert.ok(long.stdout.includes(`--${f.name}`), `${c.name} --help lists --${f.name}`);
      if (f.default !== undefined) assert.ok(long.stdout.replace(/\s+/g, ' ').includes(`default ${f.default}`), `${c.name} --help gives --${f.name}'s default ${f.default}`);
    }
    if (c.examples.length) assert.match(long.stdout, /\nexamples:\n {2}falconet|\nexamples:\n {2}\S/);
    const short = await runCli(procs, [c.name, '-h']);
    const viaHelp = await runCli(procs, ['help', c.name]);
    assert.equal(short.stdout, long.stdout, `${c.name} -h`);
    assert.equal(viaHelp.stdout, long.stdout, `help ${c.name}`);
  }
  const submit = await runCli(procs, ['submit', '--help']);
  assert.match(submit.stdout, /--max-in-flight N +tasks submitted but not yet finished[^]*default 20000/);
  assert.match(submit.stdout, /--lease S[^]*in seconds/);
  assert.match(submit.stdout, /exit codes: 0 success; 1 a task did not succeed; 2 usage or input; 3 dispatcher unreachable/);
  // `run -- CMD --help`: the task's flag, not falconet's.
  const run = await runCli(procs, ['run', '--dispatcher', 'ws://127.0.0.1:1', '--connect-timeout', '0.2', '--', 'ls', '--help']);
  assert.equal(run.code, 3, run.stderr);
});

test('--version, usage on stderr, did-you-mean, and falconet\'s own messages instead of the parser\'s', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const pkg = JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8')) as { version: string };
  for (const args of [['--version'], ['version']]) {
    const v = await runCli(procs, args);
    assert.deepEqual([v.code, v.stdout], [0, `falconet ${pkg.version}\n`]);
  }
  const bare = await runCli(procs, []);
  assert.equal(bare.code, 2);
  assert.equal(bare.stdout, '', 'usage goes to stderr');
  assert.match(bare.stderr, /usage: falconet COMMAND/);
  const top = await runCli(procs, ['--help']);
  assert.equal(top.code, 0);
  for (const c of COMMANDS) assert.match(top.stdout, new RegExp(`\\n  ${c.name} +\\S`), c.name);

  const cases: Array<[string[], RegExp]> = [
    [['stauts'], /^falconet: USAGE: unknown command "stauts"; did you mean status\?/],
    [['sumbit'], /did you mean submit\?/],
    [['up', '--prot', '5'], /^falconet: USAGE: unknown flag --prot for up; did you mean --port\?\n$/],
    [['submit', '--max-inflight', '5'], /unknown flag --max-inflight for submit; did you mean --max-in-flight\?/],
    [['submit', '--max-in-flight', '-5'], /^falconet: USAGE: --max-in-flight must be an integer ≥ 1 \(got "-5"\)\n$/],
    [['submit', '--max-in-flight'], /^falconet: USAGE: --max-in-flight needs a value \(N\)/],
    [['submit', '--file', '--detach'], /--file needs a value \(F\), not the flag --detach/],
    [['status', '--json=yes'], /--json takes no value/],
    [['status', 'bogus'], /status takes executors or instances \(got "bogus"\)/],
    [['provisioner'], /provisioner needs reset|USAGE/],
    [['--json', 'status'], /unknown flag --json: flags go after the command/],
  ];
  for (const [args, re] of cases) {
    const r = await runCli(procs, args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.equal(r.stdout, '');
    assert.doesNotMatch(r.stderr, /Unknown option|ambiguous|To specify|argument missing/, `${args.join(' ')}: not parseArgs' wording`);
  }
});

test('docs/cli.md is generated from the registry and up to date (npm run docs:cli)', { timeout: 120_000 }, () => {
  const doc = readFileSync(new URL('docs/cli.md', ROOT), 'utf8');
  assert.equal(doc, markdown(), 'docs/cli.md is stale: run npm run docs:cli');
  assert.match(doc, /## Exit codes/);
});

test('the README links docs/cli.md and shows no falconet flag the registry does not have', { timeout: 120_000 }, () => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
  assert.match(readme, /\]\(docs\/cli\.md\)/);
  const known = allFlagNames();
  const unknown = new Set<string>();
  // Flags on lines that run falconet (commands in code, and the CLI section's prose); Snakemake's
  // and npm's own flags are theirs.
  for (const line of readme.split('\n')) {
    if (!/falconet (up|dispatcher|executor|run|submit|watch|status|top|task|tasks|sessions|cancel|drain|provisioner)\b|npm start --/.test(line)) continue;
    if (/snakemake|nextflow|parsl/i.test(line)) continue;
    for (const m of line.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)) if (!known.has(m[1])) unknown.add(m[1]);
  }
  assert.deepEqual([...unknown], [], 'README flags missing from the registry');
});
