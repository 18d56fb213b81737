/**
 * What an executor has for tasks' resource requests, advertised in its hello: cpus (the cores
 * Node may use, `os.availableParallelism`), memoryMb (`os.totalmem`), NVIDIA GPUs by index (from
 * `nvidia-smi`, when it is on PATH), plus what the operator says with `--resources name=n,...`
 * (`FALCONET_RESOURCES`), which adds custom resources (`licence=2`) and overrides detected ones
 * (`cpus=8`, `gpus=0` to offer none).
 */
import { execFile } from 'node:child_process';
import { availableParallelism, totalmem } from 'node:os';
import { ErrorCode, FalconetError } from '../protocol/index.js';

/** What the hello carries (ExecutorInfo `resources` and `gpuIndices`). */
export interface Advertised {
  resources: Record<string, number>;
  gpuIndices?: number[];
}

const NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;

/**
 * Parses `name=n,name2=n2` (the flag, the variable, or an object from EC2 user-data) into amounts.
 * `where` names the source in the error (a USAGE FalconetError) for a bad name or amount.
 */
export function parseResources(value: unknown, where: string): Record<string, number> {
  const out: Record<string, number> = {};
  const entries: Array<[string, unknown]> =
    typeof value === 'string'
      ? value
          .split(',')
          .filter((x) => x.trim() !== '')
          .map((item) => {
            const eq = item.indexOf('=');
            if (eq <= 0) throw new FalconetError(ErrorCode.USAGE, `${where} takes NAME=AMOUNT pairs separated by commas, e.g. gpus=2,licence=1 (got ${JSON.stringify(item)})`);
            return [item.slice(0, eq).trim(), item.slice(eq + 1).trim()];
          })
      : value !== null && typeof value === 'object' && !Array.isArray(value)
        ? Object.entries(value)
        : (() => {
            throw new FalconetError(ErrorCode.USAGE, `${where} must be "name=n,..." or an object of numbers (got ${JSON.stringify(value)})`);
          })();
  for (const [name, raw] of entries) {
    if (!NAME.test(name)) throw new FalconetError(ErrorCode.USAGE, `${where}: ${JSON.stringify(name)} is not a resource name (a letter, then letters, digits, _ . -)`);
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw !== '' ? Number(raw) : NaN;
    if (!Number.isFinite(n) || n < 0 || n > 1e9) throw new FalconetError(ErrorCode.USAGE, `${where}: ${name} must be a number between 0 and 1e9 (got ${JSON.stringify(raw)})`);
    if (name === 'gpus' && !Number.isInteger(n)) throw new FalconetError(ErrorCode.USAGE, `${where}: gpus must be a whole number (got ${JSON.stringify(raw)})`);
    out[name] = n;
  }
  return out;
}

/**
 * The indices `nvidia-smi --query-gpu=index --format=csv,noheader` lists; none when it is not
 * installed or fails (a machine without a driver), within `timeoutMs`.
 */
export function nvidiaGpus(timeoutMs = 10_000): Promise<number[]> {
  return new Promise((resolve) => {
    execFile('nvidia-smi', ['--query-gpu=index', '--format=csv,noheader'], { timeout: timeoutMs }, (err, stdout) => {
      if (err) return resolve([]);
      const indices = stdout
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => /^\d+$/.test(l))
        .map(Number);
      resolve([...new Set(indices)].sort((a, b) => a - b));
    });
  });
}

/** Detected resources with the operator's `configured` ones on top. */
export async function detectResources(configured: Record<string, number> = {}): Promise<Advertised> {
  const gpus = await nvidiaGpus();
  const resources: Record<string, number> = { cpus: availableParallelism(), memoryMb: Math.floor(totalmem() / (1024 * 1024)), gpus: gpus.length, ...configured };
  // The detected indices stand for as many GPUs as are offered (gpus=1 on a 4-GPU host: index 0);
  // with more configured than detected, the dispatcher numbers them 0 … gpus-1.
  const offered = resources.gpus;
  if (offered > 0 && gpus.length >= offered) return { resources, gpuIndices: gpus.slice(0, offered) };
  return { resources };
}
