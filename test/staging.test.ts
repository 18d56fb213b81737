/**
 * Data staging against s3rver (a real S3-compatible server from npm) on loopback, behind a small
 * counting proxy so the test can see which requests the executor really made.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import { randomBytes, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand, S3Client, CreateBucketCommand } from '@aws-sdk/client-s3';
// s3rver ships no types.
// @ts-expect-error no declaration file
import S3rver from 's3rver';
import { connect } from '../client/index.js';
import { Procs, runCli, startDispatcher, startExecutor, status, waitExecutors, waitFor } from './helpers.js';

interface Counting {
  url: string;
  gets: string[];
  close(): Promise<void>;
}

/** Forwards every request to `target`, recording object GETs. */
async function countingProxy(target: number): Promise<Counting> {
  const gets: string[] = [];
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET') gets.push(req.url ?? '');
    // No keep-alive upstream: every socket ends with its request, so the servers can close.
    const up = request({ host: '127.0.0.1', port: target, method: req.method, path: req.url, headers: req.headers, agent: false }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    gets,
    close: () =>
      new Promise((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

test('staging: inputs from S3 through the cache, outputs to S3, and every bad case with its code', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  const s3dir = procs.tmpDir();
  const s3rver = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: s3dir });
  const { port } = await s3rver.run();
  const proxy = await countingProxy(port);
  const aws = { AWS_ENDPOINT_URL_S3: proxy.url, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };
  const s3 = new S3Client({ endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
  await s3.send(new CreateBucketCommand({ Bucket: 'data' }));
  const blob = randomBytes(1 << 20);
  await s3.send(new PutObjectCommand({ Bucket: 'data', Key: 'in/blob.bin', Body: blob }));
  const sha = createHash('sha256').update(blob).digest('hex');

  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--id', 'stager', '--slots', '2'], { ...aws, FALCONET_CACHE_DIR: procs.tmpDir() });
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  // One teardown, in order: clients and processes first, so no socket keeps a server open.
  t.after(async () => {
    await client.close();
    await procs.killAll();
    s3.destroy();
    await proxy.close();
    await s3rver.close();
  });

  const sum = ['sh', '-c', 'sha256sum in/data.bin | cut -d" " -f1 > out.txt; head -c 10485760 /dev/zero > big.bin'];
  const first = await client.submit({ cmd: sum, inputs: [{ src: 's3://data/in/blob.bin', dst: 'in/data.bin' }], outputs: [{ src: 'out.txt', dst: 's3://data/out/1.txt' }, { src: 'big.bin', dst: 's3://data/out/big.bin' }] });
  assert.equal(first.status, 'succeeded', JSON.stringify(first.error));
  const got = await s3.send(new GetObjectCommand({ Bucket: 'data', Key: 'out/1.txt' }));
  assert.equal((await got.Body!.transformToString()).trim(), sha, 'the task read the input, its output landed in S3');
  const big = await s3.send(new GetObjectCommand({ Bucket: 'data', Key: 'out/big.bin' }));
  assert.equal(big.ContentLength, 10 * 1024 * 1024, 'a 10 MiB output went up (multipart)');
  const objectGets = () => proxy.gets.filter((u) => u.includes('/in/blob.bin')).length;
  assert.equal(objectGets(), 1);

  const second = await client.submit({ cmd: ['cat', 'again.bin'], inputs: [{ src: 's3://data/in/blob.bin', dst: 'again.bin' }] });
  assert.equal(second.status, 'succeeded');
  assert.equal(objectGets(), 1, 'the second task read the cache: no second GET');

  const wrong = await client.submit({ cmd: ['true'], inputs: [{ src: 's3://data/in/blob.bin', dst: 'x.bin', sha256: '0'.repeat(64) }] });
  assert.equal(wrong.error?.code, 'INPUT_CHECKSUM_MISMATCH', 'a corrupted download is detected and not served');
  const missing = await client.submit({ cmd: ['true'], inputs: [{ src: 's3://data/no/such', dst: 'x' }] });
  assert.equal(missing.error?.code, 'INPUT_NOT_FOUND');
  const escape = await client.submit({ cmd: ['true'], inputs: [{ src: 's3://data/in/blob.bin', dst: '../../etc/evil' }] });
  assert.equal(escape.error?.code, 'PATH_ESCAPE');
  const noOutput = await client.submit({ cmd: ['true'], outputs: [{ src: 'never.txt', dst: 's3://data/out/never.txt' }] });
  assert.equal(noOutput.error?.code, 'OUTPUT_MISSING');
  const outEscape = await client.submit({ cmd: ['true'], outputs: [{ src: '/etc/passwd', dst: 's3://data/out/p' }] });
  assert.equal(outEscape.error?.code, 'PATH_ESCAPE');

  // The CLI takes the same: falconet run --input SRC=DST --output SRC=DST.
  const cli = await runCli(procs, ['run', '--dispatcher', d.url, '--input', 's3://data/in/blob.bin=in.bin', '--output', 'n.txt=s3://data/out/n.txt', '--', 'sh', '-c', 'wc -c < in.bin | tee n.txt']);
  assert.equal(cli.code, 0, cli.stderr);
  assert.equal(cli.stdout.trim(), String(1 << 20));
  assert.equal((await (await s3.send(new GetObjectCommand({ Bucket: 'data', Key: 'out/n.txt' }))).Body!.transformToString()).trim(), String(1 << 20));

  const healthy = await client.submit({ cmd: ['sh', '-c', 'wc -c < b'], inputs: [{ src: 's3://data/in/blob.bin', dst: 'b', sha256: sha }] });
  assert.equal(healthy.stdout.trim(), String(1 << 20), 'the executor and its cache stay healthy');

  // An environment's files are staged into it before its setup runs.
  const withFile = { name: 'with-file', files: [{ src: 's3://data/in/blob.bin', dst: 'lib/blob.bin' }], setup: ['sh', '-c', 'test -s lib/blob.bin && echo ready > marker'] };
  const envTask = await client.submit({ cmd: ['sh', '-c', 'cat "$FALCONET_ENV_DIR/marker"'], environment: withFile });
  assert.equal(envTask.stdout, 'ready\n', JSON.stringify(envTask.error));

  // A source that refuses us (s3rver does not check credentials, so an HTTP server says 403).
  const refusing = createServer((_req, res) => res.writeHead(403).end('no'));
  await new Promise<void>((r) => refusing.listen(0, '127.0.0.1', () => r()));
  const denied = await client.submit({ cmd: ['true'], inputs: [{ src: `http://127.0.0.1:${(refusing.address() as { port: number }).port}/secret`, dst: 'x' }] });
  refusing.close();
  assert.equal(denied.error?.code, 'INPUT_ACCESS_DENIED', JSON.stringify(denied.error));

  // /api/status shows the cache hit ratio and the bytes moved, from the executors' heartbeats.
  const st = await waitFor('data counters in status', async () => {
    const s = await status(d.url);
    const e = s.executors.find((x) => x.id === 'stager')?.data;
    return e && e.cacheHits >= 2 && e.bytesOut >= 10 * 1024 * 1024 && s.data.cacheHits === e.cacheHits ? s : undefined;
  });
  const data = st.data; // the dispatcher's own totals and ratio, as /api/status serves them
  const stager = st.executors.find((x) => x.id === 'stager')!.data!;
  assert.deepEqual([data.cacheHits, data.cacheMisses, data.bytesIn, data.bytesOut], [stager.cacheHits, stager.cacheMisses, stager.bytesIn, stager.bytesOut], 'the totals of its one executor');
  assert.equal(typeof data.cacheHitRatio, 'number', JSON.stringify(data));
  assert.ok(Math.abs(data.cacheHitRatio! - data.cacheHits / (data.cacheHits + data.cacheMisses)) < 1e-9, `hits / (hits + misses): ${JSON.stringify(data)}`);
  assert.ok(data.cacheHitRatio! >= 0.5, JSON.stringify(data));
  assert.ok(data.bytesIn >= 1 << 20 && data.bytesOut >= 10 * 1024 * 1024, JSON.stringify(data));
});

test('data-aware scheduling: with inputs cached on one of two free executors, the tasks go there', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  const s3rver = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: procs.tmpDir() });
  const { port } = await s3rver.run();
  const aws = { AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };
  const s3 = new S3Client({ endpoint: aws.AWS_ENDPOINT_URL_S3, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
  await s3.send(new CreateBucketCommand({ Bucket: 'ddd' }));
  await s3.send(new PutObjectCommand({ Bucket: 'ddd', Key: 'shared.bin', Body: randomBytes(256 * 1024) }));
  const d = await startDispatcher(procs, ['--data-policy', 'max-cache-hit', '--cache-wait-ms', '5000']);
  startExecutor(procs, d.url, ['--id', 'holder', '--slots', '2', '--labels', 'host=a'], { ...aws, FALCONET_CACHE_DIR: procs.tmpDir() });
  startExecutor(procs, d.url, ['--id', 'other', '--slots', '2', '--labels', 'host=b'], { ...aws, FALCONET_CACHE_DIR: procs.tmpDir() });
  await waitExecutors(d.url, 2);
  const client = await connect(d.url);
  t.after(async () => {
    await client.close();
    await procs.killAll();
    s3.destroy();
    await s3rver.close();
  });
  const input = { src: 's3://ddd/shared.bin', dst: 'in.bin' };
  const warm = await client.submit({ cmd: ['true'], inputs: [input], labels: { host: 'a' } });
  assert.equal(warm.executor, 'holder');
  await waitFor('the holder to report what it caches', async () => (await status(d.url)).executors.find((e) => e.id === 'holder')?.cached === 1);
  const results = await Promise.all(Array.from({ length: 8 }, () => client.submit({ cmd: ['sh', '-c', 'wc -c < in.bin'], inputs: [input] })));
  assert.ok(results.every((r) => r.status === 'succeeded' && r.stdout.trim() === String(256 * 1024)));
  assert.deepEqual([...new Set(results.map((r) => r.executor))], ['holder'], 'every task went to the executor holding its input');
  const holder = await waitFor('hits counted', async () => {
    const e = (await status(d.url)).executors.find((x) => x.id === 'holder');
    return e?.data && e.data.cacheHits >= 8 ? e : undefined;
  });
  assert.equal(holder.data!.cacheMisses, 1, 'one download, eight cache hits');
});

test('environments: set up once per executor, reused by 100 tasks; a failed setup fails fast with its log tail', { timeout: 120_000 }, async (t) => {
  const procs = new Procs();
  t.after(() => procs.killAll());
  const d = await startDispatcher(procs);
  startExecutor(procs, d.url, ['--id', 'envy', '--slots', '4'], { FALCONET_CACHE_DIR: join(procs.tmpDir(), 'cache') });
  await waitExecutors(d.url, 1);
  const client = await connect(d.url);
  t.after(() => client.close());
  const environment = {
    name: 'tools',
    setup: ['sh', '-c', 'mkdir -p bin && printf "#!/bin/sh\\necho hello-from-env\\n" > bin/hello && chmod +x bin/hello && echo setup >> setups'],
  };
  const results = await Promise.all(Array.from({ length: 100 }, () => client.submit({ cmd: ['hello'], environment })));
  assert.ok(results.every((r) => r.status === 'succeeded' && r.stdout === 'hello-from-env\n'), JSON.stringify(results.find((r) => r.status !== 'succeeded')));
  assert.equal(results.filter((r) => r.environment?.reused === false).length, 1, 'set up once');
  assert.ok(results[0].environment!.phases.some((p) => p.phase === 'requested'));
  const count = await client.submit({ cmd: ['sh', '-c', 'wc -l < "$FALCONET_ENV_DIR/setups"'], environment });
  assert.equal(count.stdout.trim(), '1', 'the setup ran once for 101 tasks');

  const marks = join(procs.tmpDir(), 'attempts');
  const broken = { name: 'broken', setup: ['sh', '-c', `echo x >> ${marks}; echo missing-compiler >&2; exit 4`] };
  const [a, b] = [await client.submit({ cmd: ['true'], environment: broken }), await client.submit({ cmd: ['true'], environment: broken })];
  for (const r of [a, b]) {
    assert.equal(r.status, 'failed');
    assert.equal(r.error?.code, 'ENVIRONMENT_FAILED');
    assert.match(r.error!.message, /missing-compiler/);
  }
  assert.equal(readFileSync(marks, 'utf8').trim().split('\n').length, 1, 'a failed setup is not run again for the next task');
});
