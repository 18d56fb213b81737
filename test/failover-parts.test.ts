/**
 * The pure parts of failover (issue 15, item 3): reading a list of dispatchers, expanding a DNS
 * name into one candidate per address (with an injected resolver: the input of our code, since a
 * real multi-address name on loopback needs /etc/hosts), the dial plan's order and backoff rules,
 * the executor's configuration (`--dispatcher` lists, user-data `urls`) and the EC2 user-data the
 * provisioner writes. The same rules over real sockets and processes: failover.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, FalconetError } from '../protocol/index.js';
import { candidateLookup, dispatcherUrls, expandCandidates, type Resolver } from '../protocol/dispatchers.js';
import { DialPlan, MAX_MOVES } from '../protocol/dial-plan.js';
import { resolveExecutorConfig, type ConfigDeps } from '../executor/config.js';
import { executorUserData } from '../dispatcher/provisioner/ec2.js';

const usage = (re: RegExp) => (err: unknown) => err instanceof FalconetError && err.code === ErrorCode.USAGE && re.test(err.message);

test('a dispatcher list: commas or an array, host:port understood, duplicates dropped; a bad entry is USAGE naming it', { timeout: 5000 }, () => {
  assert.deepEqual(dispatcherUrls('ws://a:1, b:2 ,wss://c:3/x'), ['ws://a:1', 'ws://b:2', 'wss://c:3/x']);
  assert.deepEqual(dispatcherUrls(['ws://a:1', 'ws://a:1', '[::1]:7']), ['ws://a:1', 'ws://[::1]:7']);
  assert.deepEqual(dispatcherUrls('127.0.0.1:7878'), ['ws://127.0.0.1:7878']);
  assert.throws(() => dispatcherUrls('ws://a:1,http://b:2'), usage(/entry 2 of 2: "http:\/\/b:2": a dispatcher is dialed over ws:\/\/ or wss:\/\//));
  assert.throws(() => dispatcherUrls('ws://a:1,,ws://b:2'), usage(/entry 2 of 3: empty address/));
  assert.throws(() => dispatcherUrls('ws://a:1,nope'), usage(/entry 2 of 2: "nope" is not a dispatcher address/));
  assert.throws(() => dispatcherUrls(''), usage(/no dispatcher address given/));
  assert.throws(() => dispatcherUrls([]), usage(/no dispatcher address given/));
  assert.throws(() => dispatcherUrls('a:1,'.repeat(65) + 'a:1'), usage(/at most 64/));
  // One address keeps the message it always had (no "entry 1 of 1").
  assert.throws(() => dispatcherUrls('ftp://x:1'), usage(/^"ftp:\/\/x:1": a dispatcher is dialed over ws/));
});

test('candidates: a name gives one per address (resolved at each round); IP literals and localhost are used as they are', { timeout: 5000 }, async () => {
  const asked: string[] = [];
  let round = 0;
  const resolve: Resolver = async (host) => {
    asked.push(host);
    if (host === 'gone.test') throw Object.assign(new Error('getaddrinfo ENOTFOUND gone.test'), { code: 'ENOTFOUND' });
    round++;
    return round === 1
      ? [{ address: '10.0.0.1', family: 4 }, { address: 'fd00::2', family: 6 }, { address: '10.0.0.1', family: 4 }]
      : [{ address: '10.0.0.3', family: 4 }];
  };
  const urls = ['wss://d.test:7878', 'ws://127.0.0.1:1', 'ws://localhost:2', 'ws://[::1]:3', 'ws://gone.test:4'];
  const first = await expandCandidates(urls, resolve);
  assert.deepEqual(
    first.map((c) => [c.url, c.address ?? null, c.label]),
    [
      ['wss://d.test:7878', '10.0.0.1', 'wss://d.test:7878 (10.0.0.1)'],
      ['wss://d.test:7878', 'fd00::2', 'wss://d.test:7878 (fd00::2)'],
      ['ws://127.0.0.1:1', null, 'ws://127.0.0.1:1'],
      ['ws://localhost:2', null, 'ws://localhost:2'],
      ['ws://[::1]:3', null, 'ws://[::1]:3'],
      ['ws://gone.test:4', null, 'ws://gone.test:4'], // dialed by name: its ENOTFOUND is what the user sees
    ],
  );
  assert.deepEqual(asked.sort(), ['d.test', 'gone.test'], 'only names are resolved');
  const second = await expandCandidates(['wss://d.test:7878'], resolve);
  assert.deepEqual(second.map((c) => c.address), ['10.0.0.3'], 'each round resolves again');
  // The connection goes to the address; the URL keeps the name (TLS server name, Host header).
  const lookup = candidateLookup(first[1]!)!;
  const one = await new Promise<unknown[]>((r) => (lookup as any)('d.test', {}, (...args: unknown[]) => r(args)));
  assert.deepEqual(one, [null, 'fd00::2', 6]);
  const all = await new Promise<unknown[]>((r) => (lookup as any)('d.test', { all: true }, (...args: unknown[]) => r(args)));
  assert.deepEqual(all, [null, [{ address: 'fd00::2', family: 6 }]]);
  assert.equal(candidateLookup(first[2]!), undefined);
});

// IP literals: the plan resolves nothing, so these tests ask no DNS server.
test('dial plan: failed dials go to the next candidate at once, a full failed round backs off, a loss moves on, MOVED is bounded', { timeout: 5000 }, async () => {
  const plan = new DialPlan(['ws://127.0.0.1:1', 'ws://127.0.0.1:2', 'ws://127.0.0.1:3'], { order: 'first', initialBackoffMs: 100, maxBackoffMs: 1000 });
  let c = await plan.round();
  const tried: string[] = [];
  const dial = (x: typeof c) => (plan.dialing(x), tried.push(x.url));
  dial(c);
  let n = plan.closed(false, null);
  assert.equal(n.delayMs, 0);
  assert.equal(n.backoff, false);
  dial(n.next);
  n = plan.closed(false, null);
  dial(n.next);
  n = plan.closed(false, null); // a, b and c failed: the round is over
  assert.equal(n.backoff, true);
  assert.equal(n.newRound, true);
  assert.ok(n.delayMs <= 100, 'the first round backs off at most initialBackoffMs');
  assert.deepEqual(tried, ['ws://127.0.0.1:1', 'ws://127.0.0.1:2', 'ws://127.0.0.1:3']);
  c = await plan.round();
  assert.equal(c.url, 'ws://127.0.0.1:1', 'the next round starts after the last one tried');
  dial(c);
  plan.welcomed();
  n = plan.closed(true, null); // lost after a welcome: the next dispatcher, at once
  assert.deepEqual([n.next.url, n.delayMs, n.newRound], ['ws://127.0.0.1:2', 0, false]);
  dial(n.next);
  // Redirects: followed at once MAX_MOVES times in a row, then each waits like a failed round.
  const moves: boolean[] = [];
  for (let i = 0; i < MAX_MOVES + 2; i++) {
    n = plan.closed(false, 'ws://127.0.0.9:9');
    moves.push(n.backoff);
    dial(n.next);
    assert.equal(n.next.url, 'ws://127.0.0.9:9');
  }
  assert.deepEqual(moves, [false, false, false, false, false, true, true]);
  assert.ok(plan.urls.includes('ws://127.0.0.9:9'), 'a redirect target joins the list');
  plan.welcomed();
  assert.equal(plan.closed(false, 'ws://127.0.0.9:9').backoff, false, 'a welcome resets the redirect count');
  // One candidate: a loss waits a little (a fleet must not come back in one instant) and resolves again.
  const single = new DialPlan(['ws://127.0.0.1:4']);
  single.dialing(await single.round());
  single.welcomed();
  const s = single.closed(true, null);
  assert.deepEqual([s.next.url, s.newRound], ['ws://127.0.0.1:4', true]);
});

test('dial plan: executors (random order) start spread over the dispatchers; each keeps its order from round to round', { timeout: 5000 }, async () => {
  const urls = ['ws://127.0.0.1:1', 'ws://127.0.0.1:2', 'ws://127.0.0.1:3'];
  const starts = new Set<string>();
  for (let i = 0; i < 200; i++) starts.add((await new DialPlan(urls, { order: 'random' }).round()).url);
  assert.equal(starts.size, 3, 'two hundred executors start on every dispatcher');
  const plan = new DialPlan(urls, { order: 'random' });
  const order: string[] = [];
  let c = await plan.round();
  for (let i = 0; i < 3; i++) {
    plan.dialing(c);
    order.push(c.url);
    c = plan.closed(false, null).next;
  }
  assert.deepEqual([...order].sort(), urls, 'a round tries each one once');
  const again: string[] = [];
  c = await plan.round();
  for (let i = 0; i < 3; i++) {
    plan.dialing(c);
    again.push(c.url);
    c = plan.closed(false, null).next;
  }
  assert.deepEqual(again, order);
});

function deps(userData: unknown): ConfigDeps {
  const reader = {
    endpoint: 'http://imds.fake',
    readInstanceIdentity: async () => ({ instanceId: 'i-0fa11', localIpv4: '10.0.0.9', instanceType: 't3.micro', availabilityZone: 'us-east-1a' }),
    readUserData: async () => (userData === undefined ? undefined : JSON.stringify(userData)),
  };
  return { readFile: async () => undefined, imds: () => reader as any };
}

test('executor config: --dispatcher and FALCONET_URL take lists; user-data `urls` wins over its `url`; old user-data still works', { timeout: 5000 }, async () => {
  const flag = await resolveExecutorConfig({ dispatcher: 'ws://a:1,b:2' }, {}, deps(undefined));
  assert.equal(flag.options.url, 'ws://a:1,ws://b:2');
  const env = await resolveExecutorConfig({}, { FALCONET_URL: 'http://old:7878' }, deps(undefined));
  assert.equal(env.options.url, 'ws://old:7878', 'http:// was accepted before lists: it still is');
  const both = await resolveExecutorConfig({}, { FALCONET_IMDS: '1' }, deps({ url: 'ws://a:1', urls: ['ws://a:1', 'ws://b:2'] }));
  assert.equal(both.options.url, 'ws://a:1,ws://b:2');
  assert.equal(both.sources.url, 'user-data');
  assert.deepEqual(both.warnings, [], '`urls` is a known key');
  const old = await resolveExecutorConfig({}, { FALCONET_IMDS: '1' }, deps({ url: 'ws://a:1' }));
  assert.equal(old.options.url, 'ws://a:1');
  const comma = await resolveExecutorConfig({}, { FALCONET_IMDS: '1' }, deps({ url: 'ws://a:1,ws://c:3' }));
  assert.equal(comma.options.url, 'ws://a:1,ws://c:3');
  const flagWins = await resolveExecutorConfig({ dispatcher: 'ws://f:1' }, { FALCONET_IMDS: '1' }, deps({ urls: ['ws://a:1'] }));
  assert.equal(flagWins.options.url, 'ws://f:1');
  await assert.rejects(resolveExecutorConfig({ dispatcher: 'ws://a:1,nope' }, {}, deps(undefined)), usage(/--dispatcher must be a ws:\/\/ or wss:\/\/ URL.*entry 2 of 2: "nope"/));
  await assert.rejects(resolveExecutorConfig({}, { FALCONET_IMDS: '1' }, deps({ urls: ['ws://a:1', 7] })), usage(/"urls" in the EC2 user-data must be .*entry 2 of 2/));
  await assert.rejects(resolveExecutorConfig({}, { FALCONET_IMDS: '1' }, deps({ urls: { a: 1 } })), usage(/"urls" in the EC2 user-data must be an array of ws:\/\/ or wss:\/\/ URLs/));
  await assert.rejects(resolveExecutorConfig({}, { FALCONET_IMDS: '1' }, deps({ url: ['ws://a:1'] })), usage(/"url" in the EC2 user-data must be a non-empty string/));
});

test('EC2 user-data: `url` always (older AMIs read it), `urls` when there are several', { timeout: 5000 }, () => {
  assert.deepEqual(executorUserData({ urls: ['ws://a:1'], slots: 2 }), { url: 'ws://a:1', slots: 2 });
  assert.deepEqual(executorUserData({ urls: ['ws://a:1', 'ws://b:2'], token: 't' }), { url: 'ws://a:1', urls: ['ws://a:1', 'ws://b:2'], token: 't' });
  assert.throws(() => executorUserData({ urls: [] }));
});

test('dial plan: MOVED with no target (a partition between dispatchers) asks again shortly, without growing backoff', { timeout: 5000 }, async () => {
  const plan = new DialPlan(['ws://127.0.0.1:1', 'ws://127.0.0.1:2'], { order: 'first', initialBackoffMs: 100, maxBackoffMs: 10_000 });
  plan.dialing(await plan.round());
  for (let i = 0; i < 20; i++) {
    const n = plan.closed(false, '');
    assert.equal(n.backoff, false, 'not a failure');
    assert.ok(n.delayMs >= 150 && n.delayMs <= 450, `a short wait (${n.delayMs} ms), not an exponential one`);
    plan.dialing(n.next);
    // The other dispatcher (dead) refuses: one failure, not a round's worth of backoff.
    const refused = plan.closed(false, null);
    assert.equal(refused.backoff, false, 'a dead dispatcher between two MOVED answers does not grow the backoff');
    plan.dialing(refused.next);
  }
});

test('dial plan: a redirect to the dispatcher that just refused the dial is a "not yet", not a redirect loop', { timeout: 5000 }, async () => {
  const plan = new DialPlan(['ws://127.0.0.1:1', 'ws://127.0.0.1:2'], { order: 'first', initialBackoffMs: 100, maxBackoffMs: 10_000 });
  plan.dialing(await plan.round());
  for (let i = 0; i < 20; i++) {
    // The dead owner (…:1) refuses; the survivor (…:2) still names it as the owner.
    const refused = plan.closed(false, null);
    assert.equal(refused.next.url, 'ws://127.0.0.1:2');
    plan.dialing(refused.next);
    const n = plan.closed(false, 'ws://127.0.0.1:1');
    assert.equal(n.backoff, false, `round ${i}: no growing backoff`);
    assert.ok(n.delayMs <= 450, `round ${i}: asks again shortly (${n.delayMs} ms)`);
    plan.dialing(n.next);
  }
});

test('dial plan: the live dispatchers a dispatcher names (peers) are dialed after the known ones; each list replaces the last', { timeout: 5000 }, async () => {
  const plan = new DialPlan(['ws://127.0.0.1:1'], { order: 'first', initialBackoffMs: 1, maxBackoffMs: 1 });
  plan.dialing(await plan.round());
  plan.welcomed();
  plan.learn(['ws://127.0.0.1:2', 'ws://127.0.0.1:1', 'ws://127.0.0.1:3', 'ws://127.0.0.1:2']);
  assert.deepEqual(plan.urls, ['ws://127.0.0.1:1', 'ws://127.0.0.1:2', 'ws://127.0.0.1:3'], 'once each, after the configured one');
  // Its dispatcher is lost: the round that follows dials the others it was told of.
  let n = plan.closed(true, null);
  const c = n.newRound ? await plan.round() : n.next;
  plan.dialing(c);
  const tried = [c.url];
  n = plan.closed(false, null);
  plan.dialing(n.next);
  tried.push(n.next.url);
  assert.deepEqual(tried.sort(), ['ws://127.0.0.1:2', 'ws://127.0.0.1:3']);
  // A dispatcher that left is dropped at the next list; at most 64 are kept.
  plan.learn(['ws://127.0.0.1:3']);
  assert.deepEqual(plan.urls, ['ws://127.0.0.1:1', 'ws://127.0.0.1:3']);
  plan.learn(Array.from({ length: 100 }, (_, i) => `ws://10.0.0.${i}:1`));
  assert.equal(plan.urls.length, 1 + 64);
});
