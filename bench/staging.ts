/**
 * Tasks with 1 MB inputs from S3 (s3rver on loopback), cold and warm executor cache, side by
 * side in one run: N tasks each reading its own 1 MB object (every input downloaded), then the
 * same N tasks again (every input a cache hit). A dispatcher (durable store) and two executors
 * as processes; the client in this process.
 *
 *   npm run build && node dist/bench/staging.js [--tasks 200] [--runs 3]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
// @ts-expect-error s3rver ships no types
import S3rver from 's3rver';
import { connect, type TaskSpec } from '../client/index.js';
import { exited, resultsFile, waitLine } from './harness.js';

const CLI = fileURLToPath(new URL('../client/cli.js', import.meta.url));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { tasks: { type: 'string' }, runs: { type: 'string' } } });
  const n = Number(values.tasks ?? 200);
  const runs = Number(values.runs ?? 3);
  const dir = mkdtempSync(join(tmpdir(), 'falconet-bench-staging-'));
  const procs: ChildProcess[] = [];
  const s3rver = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: join(dir, 's3') });
  const { port } = await s3rver.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const s3 = new S3Client({ endpoint, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
  const cold: number[] = [];
  const warm: number[] = [];
  try {
    await s3.send(new CreateBucketCommand({ Bucket: 'bench' }));
    for (let i = 0; i < n; i++) await s3.send(new PutObjectCommand({ Bucket: 'bench', Key: `in/${i}`, Body: randomBytes(1 << 20) }));
    const env = { ...process.env, FALCONET_LOG: 'warn', AWS_ENDPOINT_URL_S3: endpoint, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };
    for (let r = 0; r < runs; r++) {
      const d = spawn(process.execPath, [CLI, 'dispatcher', '--port', '0', '--host', '127.0.0.1', '--data-dir', join(dir, `d${r}`)], { stdio: ['ignore', 'pipe', 'ignore'], env });
      procs.push(d);
      const [, url] = await waitLine(d, /listening on (\S+)/);
      for (let e = 0; e < 2; e++) {
        procs.push(spawn(process.execPath, [CLI, 'executor', '--dispatcher', url, '--slots', '4'], { stdio: 'ignore', env: { ...env, FALCONET_CACHE_DIR: join(dir, `cache${r}-${e}`) } }));
      }
      const client = await connect(url);
      const tasks: TaskSpec[] = Array.from({ length: n }, (_, i) => ({ cmd: ['true'], inputs: [{ src: `s3://bench/in/${i}`, dst: 'in.bin' }] }));
      for (const into of [cold, warm]) {
        const t0 = process.hrtime.bigint();
        const results = await Promise.all(tasks.map((t) => client.submit(t)));
        const s = Number(process.hrtime.bigint() - t0) / 1e9;
        const bad = results.find((x) => x.status !== 'succeeded');
        if (bad) throw new Error(`a task failed: ${JSON.stringify(bad.error)}`);
        into.push(n / s);
      }
      await client.close();
      for (const p of procs.splice(0)) p.kill('SIGKILL');
      process.stderr.write(`run ${r + 1}/${runs}: cold ${Math.round(cold.at(-1)!)} tasks/s, warm ${Math.round(warm.at(-1)!)} tasks/s\n`);
    }
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map(exited));
    s3.destroy();
    await s3rver.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const ratio = median(warm.map((w, i) => w / cold[i]));
  const out = {
    date: new Date().toISOString(),
    machine: { cores: cpus().length, node: process.version },
    command: `node dist/bench/staging.js --tasks ${n} --runs ${runs}`,
    inputBytes: 1 << 20,
    cold: { median: Math.round(median(cold)), min: Math.round(Math.min(...cold)), max: Math.round(Math.max(...cold)) },
    warm: { median: Math.round(median(warm)), min: Math.round(Math.min(...warm)), max: Math.round(Math.max(...warm)) },
    warmToCold: +ratio.toFixed(2),
  };
  mkdirSync(resultsFile(), { recursive: true });
  writeFileSync(resultsFile(`staging-${out.date.slice(0, 10)}.json`), JSON.stringify(out, null, 2) + '\n');
  console.log('| cache | tasks/s with a 1 MB S3 input, median (min–max) |');
  console.log('|---|---|');
  console.log(`| cold (every input downloaded) | ${out.cold.median} (${out.cold.min}–${out.cold.max}) |`);
  console.log(`| warm (every input a cache hit) | ${out.warm.median} (${out.warm.min}–${out.warm.max}) |`);
  console.log(`warm / cold, median of runs: ${out.warmToCold}`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
