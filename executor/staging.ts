/**
 * Data to and from an attempt's sandbox. Inputs come from `s3://` (through the executor's
 * content cache, keyed by bucket, key and ETag, so a second task with the same input does not
 * download it again), from `https://` (cached by URL, or by the digest the task gives), or from
 * a path on the executor. Outputs go to `s3://` after the task succeeds, as multipart uploads
 * when large (@aws-sdk/lib-storage). S3 follows the SDK's standard configuration: with an
 * endpoint configured (`AWS_ENDPOINT_URL_S3`), path-style addressing, as S3-compatible stores
 * expect. Every failure has its own code; nothing here can take the executor or its cache down.
 */
import { createWriteStream } from 'node:fs';
import { copyFile, mkdir, stat } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { ErrorCode, FalconetError } from '../protocol/index.js';
import type { CacheLease, ContentCache } from './cache.js';

export interface InputSpec {
  src: string;
  dst: string;
  sha256?: string;
  size?: number;
}

export interface OutputSpec {
  src: string;
  dst: string;
}

/** What staging moved, for the attempt's result and the executor's counters. */
export interface StagingStats {
  cacheHits: number;
  bytesIn: number;
  bytesOut: number;
}

/** The S3 SDK and this process's one client (see {@link s3}). */
interface S3 {
  client: S3Client;
  sdk: typeof import('@aws-sdk/client-s3');
  Upload: typeof import('@aws-sdk/lib-storage').Upload;
}
let loaded: Promise<S3> | null = null;
/**
 * One client per process, configured as the SDK configures itself (region, credentials, endpoint).
 * The SDK is loaded at the first S3 transfer, not at startup: loading it cost every executor
 * ~0.3 s of CPU (half of its start) whether or not a task ever stages from S3.
 */
export function s3(): Promise<S3> {
  loaded ??= Promise.all([import('@aws-sdk/client-s3'), import('@aws-sdk/lib-storage')]).then(
    ([sdk, storage]) => ({
      sdk,
      Upload: storage.Upload,
      client: new sdk.S3Client({
        forcePathStyle: Boolean(process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL),
        // Streaming uploads with the SDK's default checksums are sent aws-chunked, which
        // S3-compatible stores (s3rver) store corrupted: checksum only when the API requires it.
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      }),
    }),
    (err: unknown) => {
      loaded = null; // a later transfer tries again
      throw err;
    },
  );
  return loaded;
}

/** A path inside the sandbox, or PATH_ESCAPE: `../` and absolute paths may not leave it. */
export function insideSandbox(sandbox: string, path: string, what: string): string {
  const full = resolve(sandbox, path);
  const rel = relative(sandbox, full);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
    throw new FalconetError(ErrorCode.PATH_ESCAPE, `${what} ${JSON.stringify(path)} is outside the task's sandbox`);
  }
  return full;
}

function parseS3(url: string): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(url);
  if (!m) throw new FalconetError(ErrorCode.INPUT_FAILED, `not an s3://bucket/key URL: ${url}`);
  return { bucket: m[1], key: m[2] };
}

/** Maps an S3 or network error on an input to our codes. */
function inputError(err: unknown, src: string): FalconetError {
  if (err instanceof FalconetError) return err;
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number }; message?: string };
  const status = e.$metadata?.httpStatusCode;
  if (e.name === 'NoSuchKey' || e.name === 'NotFound' || e.name === 'NoSuchBucket' || status === 404) {
    return new FalconetError(ErrorCode.INPUT_NOT_FOUND, `input ${src} does not exist`);
  }
  if (e.name === 'AccessDenied' || e.name === 'Forbidden' || status === 403) {
    return new FalconetError(ErrorCode.INPUT_ACCESS_DENIED, `access to input ${src} was denied`);
  }
  return new FalconetError(ErrorCode.INPUT_FAILED, `input ${src} could not be fetched: ${e.name ?? ''} ${e.message ?? String(err)}`.trim());
}

/**
 * Stages every input into the sandbox. Returns the cache leases (release them when the attempt
 * ends: a leased file is never evicted) and what was moved.
 */
export async function stageInputs(inputs: InputSpec[], sandbox: string, cache: ContentCache): Promise<{ leases: CacheLease[]; stats: StagingStats }> {
  const leases: CacheLease[] = [];
  const stats: StagingStats = { cacheHits: 0, bytesIn: 0, bytesOut: 0 };
  try {
    for (const input of inputs) {
      const dst = insideSandbox(sandbox, input.dst, 'input dst');
      const expect = { ...(input.size !== undefined ? { size: input.size } : {}), ...(input.sha256 ? { sha256: input.sha256 } : {}) };
      let lease: CacheLease;
      try {
        if (input.src.startsWith('s3://')) {
          const { bucket, key } = parseS3(input.src);
          const { client, sdk } = await s3();
          const head = await client.send(new sdk.HeadObjectCommand({ Bucket: bucket, Key: key }));
          // Identity of the content: a new version of the object has a new ETag, so a new entry.
          const id = input.sha256 ? `sha256:${input.sha256.toLowerCase()}` : `s3:${bucket}/${key}@${head.ETag ?? ''}`;
          lease = await cache.acquire(
            id,
            async (tmp) => {
              const got = await client.send(new sdk.GetObjectCommand({ Bucket: bucket, Key: key, ...(head.ETag ? { IfMatch: head.ETag } : {}) }));
              await pipeline(got.Body as Readable, createWriteStream(tmp));
            },
            { size: head.ContentLength ?? input.size, ...(input.sha256 ? { sha256: input.sha256 } : {}) },
          );
        } else if (input.src.startsWith('https://') || input.src.startsWith('http://')) {
          const id = input.sha256 ? `sha256:${input.sha256.toLowerCase()}` : `url:${input.src}`;
          lease = await cache.acquire(
            id,
            async (tmp) => {
              const res = await fetch(input.src);
              if (res.status === 404) throw new FalconetError(ErrorCode.INPUT_NOT_FOUND, `input ${input.src} does not exist (HTTP 404)`);
              if (res.status === 401 || res.status === 403) throw new FalconetError(ErrorCode.INPUT_ACCESS_DENIED, `access to input ${input.src} was denied (HTTP ${res.status})`);
              if (!res.ok || !res.body) throw new FalconetError(ErrorCode.INPUT_FAILED, `input ${input.src}: HTTP ${res.status}`);
              await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), createWriteStream(tmp));
            },
            expect,
          );
        } else {
          // A path on the executor: copied, not cached (it is already local).
          await mkdir(dirname(dst), { recursive: true });
          await copyFile(input.src, dst).catch((err: NodeJS.ErrnoException) => {
            throw err.code === 'ENOENT'
              ? new FalconetError(ErrorCode.INPUT_NOT_FOUND, `input ${input.src} does not exist on this executor`)
              : err.code === 'EACCES'
                ? new FalconetError(ErrorCode.INPUT_ACCESS_DENIED, `input ${input.src} cannot be read`)
                : err;
          });
          stats.bytesIn += (await stat(dst)).size;
          continue;
        }
      } catch (err) {
        throw inputError(err, input.src);
      }
      leases.push(lease);
      if (lease.hit) stats.cacheHits++;
      else stats.bytesIn += lease.size;
      await cache.linkInto(lease, dst);
    }
  } catch (err) {
    for (const l of leases) l.release();
    throw err;
  }
  return { leases, stats };
}

/** Uploads each output to S3; a declared output the task did not produce is OUTPUT_MISSING. */
export async function uploadOutputs(outputs: OutputSpec[], sandbox: string, stats: StagingStats): Promise<void> {
  for (const output of outputs) {
    const src = insideSandbox(sandbox, output.src, 'output src');
    const size = await stat(src).then(
      (s) => s.size,
      () => {
        throw new FalconetError(ErrorCode.OUTPUT_MISSING, `the task did not produce its output ${JSON.stringify(output.src)}`);
      },
    );
    const { bucket, key } = (() => {
      try {
        return parseS3(output.dst);
      } catch {
        throw new FalconetError(ErrorCode.OUTPUT_FAILED, `output dst must be s3://bucket/key (got ${JSON.stringify(output.dst)})`);
      }
    })();
    try {
      const { createReadStream } = await import('node:fs');
      const { client, Upload } = await s3();
      // lib-storage sends small files in one PUT and large ones as a multipart upload.
      await new Upload({ client, params: { Bucket: bucket, Key: key, Body: createReadStream(src), ContentLength: size }, partSize: 8 * 1024 * 1024, queueSize: 2 }).done();
    } catch (err) {
      throw new FalconetError(ErrorCode.OUTPUT_FAILED, `upload of ${output.src} to ${output.dst} failed: ${(err as Error).name}: ${(err as Error).message}`);
    }
    stats.bytesOut += size;
  }
}
