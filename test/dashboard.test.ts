/**
 * The dashboard at `/`, driven in Debian's headless Chromium through playwright-core against a
 * real dispatcher (with the client token required on HTTP, as off loopback) whose executors run
 * tasks: the page shows nothing without the token, then, given it in the fragment, the same
 * numbers as `/api/status`, the failures with their codes, each executor, the provisioner and the
 * sessions. Leaves a screenshot in test-artifacts/dashboard.png.
 *
 * playwright-core resolves as a package (a devDependency), else from the directory named by
 * FALCONET_PLAYWRIGHT (e.g. /tmp/pw/node_modules/playwright-core); no browser is downloaded:
 * the test uses /usr/bin/chromium (FALCONET_CHROMIUM to point elsewhere) and skips, saying why,
 * when either is missing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { connect, type TaskSpec } from '../client/index.js';
import type { StatusSnapshot } from '../dispatcher/status.js';
import { Procs, ensureDebianPackages, exited, startDispatcher, startExecutor, status, waitExecutors, waitFor } from './helpers.js';

/** The little of playwright-core's API this test uses (it is not a dependency of the build). */
interface Locator {
  textContent(): Promise<string | null>;
  count(): Promise<number>;
  click(): Promise<void>;
  isVisible(): Promise<boolean>;
  getAttribute(name: string): Promise<string | null>;
  first(): Locator;
  locator(selector: string): Locator;
}
interface Page {
  goto(url: string): Promise<unknown>;
  url(): string;
  locator(selector: string): Locator;
  on(event: 'dialog', fn: (d: { dismiss(): Promise<void> }) => void): void;
  on(event: 'pageerror', fn: (e: Error) => void): void;
  evaluate<T>(fn: () => T): Promise<T>;
  screenshot(o: { path: string; fullPage?: boolean }): Promise<unknown>;
}
interface Browser {
  newContext(o?: { viewport?: { width: number; height: number } }): Promise<{ newPage(): Promise<Page>; close(): Promise<void> }>;
  close(): Promise<void>;
}
interface Playwright {
  chromium: { launch(o: { executablePath: string; args?: string[]; headless?: boolean }): Promise<Browser> };
}

const CHROMIUM = process.env.FALCONET_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

function loadPlaywright(): Playwright | string {
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const spec of ['playwright-core', process.env.FALCONET_PLAYWRIGHT]) {
    if (!spec) continue;
    try {
      return require(spec) as Playwright;
    } catch (err) {
      tried.push(`${spec}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return `playwright-core is not installed (add it to devDependencies, or set FALCONET_PLAYWRIGHT to its directory); tried ${tried.join('; ')}`;
}

// Installed before any test starts: apt may take minutes, which no test's timeout should include.
const chromiumMissing = process.env.FALCONET_CHROMIUM ? (existsSync(CHROMIUM) ? null : `no Chromium at ${CHROMIUM}`) : ensureDebianPackages(['chromium'], () => existsSync(CHROMIUM));

test('the dashboard shows the live status, executors, provisioner, sessions and failures, and nothing without the token', { timeout: 150_000 }, async (t) => {
  const pw = loadPlaywright();
  if (typeof pw === 'string') return t.skip(pw);
  if (chromiumMissing) return t.skip(chromiumMissing);

  const procs = new Procs();
  // Cleanup in this order, whatever failed: the browser, the client, the dispatcher by SIGTERM (so
  // that its provisioner stops the executor it started: SIGKILL would orphan it), then the rest.
  const cleanup: Array<() => Promise<unknown>> = [];
  t.after(async () => {
    for (const step of cleanup.reverse()) await step().catch((err: Error) => t.diagnostic(`cleanup: ${err.message}`));
    await procs.killAll();
  });
  const token = `dash-${Math.random().toString(36).slice(2)}`;
  // --http-auth: the HTTP API wants the client token even on loopback, as it does off loopback.
  // A local provisioner keeps one executor of 2 slots; one more executor of 3 slots is ours.
  const d = await startDispatcher(procs, ['--http-auth', '--client-token', token, '--provisioner', 'local', '--min', '1', '--max', '1', '--executor-slots', '2']);
  cleanup.push(async () => {
    const exit = exited(d.proc, 20_000, 'the dispatcher after SIGTERM');
    d.proc.kill('SIGTERM');
    await exit;
  });
  startExecutor(procs, d.url, ['--slots', '3', '--id', 'dash-a']);
  await waitExecutors(d.url, 2, token);
  const base = d.url.replace(/^ws/, 'http');

  // `/` is static and served without the token; the data behind it is not.
  const plain = await fetch(`${base}/`);
  assert.equal(plain.status, 200);
  assert.match(plain.headers.get('content-type') ?? '', /^text\/html/);
  assert.match(await plain.text(), /<title>falconet<\/title>/);
  assert.equal((await fetch(`${base}/api/status`)).status, 401);

  const browser = await pw.chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  cleanup.push(() => browser.close());

  // Without the token: the page asks (the prompt is dismissed), says so and shows no data.
  const bare = await browser.newContext();
  const nobody = await bare.newPage();
  let prompts = 0;
  nobody.on('dialog', (dialog) => {
    prompts++;
    void dialog.dismiss();
  });
  await nobody.goto(`${base}/`);
  await waitFor('the page to say a token is required', async () => (await nobody.locator('#conn').textContent()) === 'token required', 10_000);
  assert.equal(prompts, 1, 'one prompt for the token');
  assert.equal(await nobody.locator('#main').isVisible(), false, 'no data without the token');
  assert.equal(await nobody.locator('[data-stat="executors-connected"]').textContent(), '–');
  await bare.close();

  // With the token in the fragment: it moves to sessionStorage and out of the address bar.
  const ctx = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
  const page = await ctx.newPage();
  const pageErrors: Error[] = [];
  page.on('pageerror', (e) => pageErrors.push(e));
  page.on('dialog', (dialog) => {
    pageErrors.push(new Error('the page prompted although it had the token'));
    void dialog.dismiss();
  });
  await page.goto(`${base}/#token=${encodeURIComponent(token)}`);
  const text = async (stat: string) => ((await page.locator(`[data-stat="${stat}"]`).first().textContent()) ?? '').trim();
  await waitFor('the page to show 2 executors', async () => (await text('executors-connected')) === '2', 15_000);
  assert.ok(!page.url().includes(token), `the token left the address bar: ${page.url()}`);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('falconet.token')), token);

  // Work, some of which fails in three ways.
  const client = await connect(d.url, { token });
  cleanup.push(() => client.close());
  const tasks: TaskSpec[] = [];
  // About 2 s of work on 5 slots, so that the page samples a busy queue.
  for (let i = 0; i < 400; i++) tasks.push(i % 2 === 0 ? { id: `s${i}`, builtin: 'sleep', ms: 50 } : { id: `n${i}`, builtin: 'noop' });
  tasks.push({ id: 'exits-3', cmd: ['sh', '-c', 'exit 3'], maxAttempts: 1 });
  tasks.push({ id: 'no-such-binary', cmd: ['/nonexistent/falconet-dashboard-test'], maxAttempts: 1 });
  tasks.push({ id: 'too-slow', cmd: ['sleep', '5'], timeoutMs: 300, maxAttempts: 1 });
  const results = await Promise.all(tasks.map((task) => client.submit(task)));
  const by = new Map(results.map((r) => [r.id, r]));
  assert.equal(by.get('exits-3')?.error?.code, 'TASK_FAILED');
  assert.equal(by.get('no-such-binary')?.error?.code, 'SPAWN_FAILED');
  assert.equal(by.get('too-slow')?.error?.code, 'TASK_TIMEOUT');
  assert.equal(results.filter((r) => r.status === 'succeeded').length, 400);

  // The queue is idle: the page (at most a poll behind) must agree with /api/status.
  const stats: Array<[string, (s: StatusSnapshot) => string]> = [
    ['executors-connected', (s) => String(s.executors.filter((e) => e.state !== 'disconnected').length)],
    ['executors-total', (s) => String(s.executors.length)],
    ['slots-total', (s) => String(s.slots.total)],
    ['slots-busy', (s) => String(s.slots.busy)],
    ['queued', (s) => String(s.tasks.queued)],
    ['running', (s) => String(s.tasks.running)],
    ['submitted', (s) => String(s.tasks.submitted)],
    ['succeeded', (s) => String(s.tasks.finished.succeeded)],
    ['failed', (s) => String(s.tasks.finished.failed)],
    ['timed_out', (s) => String(s.tasks.finished.timed_out)],
    ['lost', (s) => String(s.tasks.finished.lost)],
    ['cache-hit-ratio', (s) => (s.data.cacheHitRatio === null ? '–' : `${(s.data.cacheHitRatio * 100).toFixed(1)}%`)],
    ['sessions', (s) => `${s.sessions.connected} / ${s.sessions.total}`],
  ];
  let compared: Array<[string, string, string]> = [];
  await waitFor(
    'the page to agree with /api/status',
    async () => {
      const [s, shown] = await Promise.all([status(d.url, token), Promise.all(stats.map(([k]) => text(k)))]);
      compared = stats.map(([k, f], i) => [k, shown[i], f(s)]);
      return s.tasks.queued === 0 && s.tasks.running === 0 && compared.every(([, a, b]) => a === b);
    },
    10_000,
  ).catch(() => {});
  assert.deepEqual(
    compared.map(([k, shown]) => [k, shown]),
    compared.map(([k, , api]) => [k, api]),
    'page (actual) vs /api/status (expected)',
  );
  assert.equal(compared.find(([k]) => k === 'succeeded')?.[1], '400');
  assert.equal(compared.find(([k]) => k === 'slots-total')?.[1], '5');

  // Recent failures, each with its code.
  const failure = (id: string) => page.locator(`#failure-rows tr[data-task="${id}"]`);
  for (const [id, code] of [['exits-3', 'TASK_FAILED'], ['no-such-binary', 'SPAWN_FAILED'], ['too-slow', 'TASK_TIMEOUT']]) {
    await waitFor(`${id} in the failures with ${code}`, async () => (await failure(id).locator('td.code').count()) === 1 && (await failure(id).locator('td.code').textContent()) === code, 10_000);
  }
  assert.match((await failure('exits-3').textContent()) ?? '', /exited with code 3/);

  // Executors by state, and each one on a click.
  const states = await status(d.url, token);
  const idle = states.executors.filter((e) => e.state === 'idle').length;
  assert.equal(await page.locator('[data-executor-state="idle"]').textContent(), String(idle));
  assert.equal(await page.locator('tr[data-executor="dash-a"]').isVisible(), false, 'the per-executor table starts closed');
  await page.locator('#executor-details > summary').click();
  const ours = page.locator('tr[data-executor="dash-a"]');
  assert.equal(await ours.isVisible(), true);
  const cells = await ours.locator('td').count();
  assert.equal(cells, 10);
  const row = (await ours.textContent()) ?? '';
  assert.match(row, /dash-a/);
  assert.match(row, /idle/);
  assert.match(row, /127\.0\.0\.1|ago/);
  assert.equal(await page.locator('#executor-rows tr').count(), states.executors.length);

  // The provisioner (local, one instance) and the sessions.
  assert.equal(await page.locator('#provisioner').isVisible(), true);
  assert.equal(await text('last-decision'), (states as StatusSnapshot & { provisioner: { lastDecision: string } }).provisioner.lastDecision);
  await waitFor('one instance', async () => (await page.locator('#instance-rows tr').count()) === 1 && (await text('instances')) === '1', 5_000);
  const sessionId = client.session.id;
  // id, client, submitted, finished, unfinished, unacked, created
  await waitFor('our session, all finished, in the sessions', async () => {
    const r = await page.evaluate(() => [...document.querySelectorAll('#session-rows tr:first-child td')].map((td) => (td as HTMLElement).title || td.textContent));
    return r.length === 7 && r[0] === sessionId && r[1] === 'connected' && r[2] === '403' && r[3] === '403' && r[4] === '0';
  }, 5_000);

  // The charts drew the last seconds from the page's own samples.
  // Each series is a polyline of "x,y" points; y below the baseline (144 in the 160-high view) is > 0.
  for (const [chart, series] of [['queue', 'running'], ['rate', 'finishedRate']]) {
    const points = ((await page.locator(`#chart-${chart} polyline[data-series="${series}"]`).getAttribute('points')) ?? '').trim().split(/\s+/);
    assert.ok(points.length >= 3, `${series} chart points: ${points.length}`);
    assert.ok(points.some((p) => Number(p.split(',')[1]) < 143), `${series} never above 0 in the chart: ${points.join(' ')}`);
  }

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: `${ARTIFACTS}dashboard.png`, fullPage: true });
  t.diagnostic(`screenshot: ${ARTIFACTS}dashboard.png`);
  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors on the page');
  await ctx.close();
});
