/**
 * The executor's configuration: one value per setting, the first found in
 *
 *   1. command-line flags,
 *   2. the process environment (`FALCONET_*`),
 *   3. an env file (`--config FILE` or `FALCONET_CONFIG`; by default `/etc/falconet/executor.env`
 *      when it exists): `KEY=VALUE` lines, `#` comments,
 *   4. the EC2 user-data, read through IMDSv2: a bare JSON object (what the dispatcher's EC2
 *      backend sends), optionally after a first line `#!falconet`. Any other user-data
 *      (`#cloud-config`, a script) is not ours and is ignored.
 *
 * IMDS is consulted when no URL came from 1–3, when `--imds` / `FALCONET_IMDS=1` asks for it, or
 * when `AWS_EC2_METADATA_SERVICE_ENDPOINT` is set; never with `FALCONET_IMDS=0` or
 * `AWS_EC2_METADATA_DISABLED=true`. When it answers, the instance id (also the executor id unless
 * one is configured) and the instance's addresses are reported at registration.
 *
 * Anything wrong (no URL anywhere, a value of the wrong type, user-data that starts like JSON but
 * is not) is a FalconetError(USAGE): the CLI prints it and exits 2.
 */
import { readFile as fsReadFile } from 'node:fs/promises';
import { ErrorCode, FalconetError, LIMITS } from '../protocol/index.js';
import type { ExecutorOptions } from './agent.js';
import { Imds, type ImdsReader, type InstanceIdentity } from './imds.js';
import { isPem } from '../protocol/tls.js';
import { dispatcherUrls } from '../protocol/dispatchers.js';
import { parseResources } from './resources.js';

export const DEFAULT_ENV_FILE = '/etc/falconet/executor.env';

/** The `falconet executor` flags, as node:util parseArgs returns them. */
export interface ExecutorFlags {
  dispatcher?: string;
  token?: string;
  id?: string;
  slots?: string;
  labels?: string;
  resources?: string;
  mode?: string;
  'dispatcher-order'?: string;
  'idle-exit'?: string;
  'output-limit'?: string;
  spawner?: string;
  'dispatcher-timeout'?: string;
  'retire-exit-code'?: string;
  'shutdown-command'?: string;
  config?: string;
  imds?: boolean;
  ca?: string;
  lifetime?: string;
  'drain-margin'?: string;
  'spot-grace'?: string;
  'notice-poll'?: string;
}

export interface ConfigDeps {
  /** The file's text, or undefined when it does not exist. */
  readFile(path: string): Promise<string | undefined>;
  /** The metadata service (or a factory, called only when IMDS is consulted). */
  imds: ImdsReader | (() => ImdsReader);
}

export type Source = 'flag' | 'env' | 'file' | 'user-data';

interface SettingSpec {
  flag: keyof ExecutorFlags;
  env: string;
  /** Key in the user-data JSON (absent: not settable there). */
  ud?: string;
}

const SETTINGS = {
  url: { flag: 'dispatcher', env: 'FALCONET_URL', ud: 'url' },
  token: { flag: 'token', env: 'FALCONET_TOKEN', ud: 'token' },
  id: { flag: 'id', env: 'FALCONET_EXECUTOR_ID', ud: 'id' },
  slots: { flag: 'slots', env: 'FALCONET_SLOTS', ud: 'slots' },
  labels: { flag: 'labels', env: 'FALCONET_LABELS', ud: 'labels' },
  /** Resources offered to tasks' requests besides (or instead of) the detected ones. */
  resources: { flag: 'resources', env: 'FALCONET_RESOURCES', ud: 'resources' },
  mode: { flag: 'mode', env: 'FALCONET_MODE', ud: 'mode' },
  /** With several dispatcher URLs: `random` spreads a fleet given one list; `first` prefers the list's order. */
  dispatcherOrder: { flag: 'dispatcher-order', env: 'FALCONET_DISPATCHER_ORDER', ud: 'dispatcherOrder' },
  idleExit: { flag: 'idle-exit', env: 'FALCONET_IDLE_EXIT', ud: 'idleExitS' },
  dispatcherTimeout: { flag: 'dispatcher-timeout', env: 'FALCONET_DISPATCHER_TIMEOUT', ud: 'dispatcherTimeoutS' },
  retireExitCode: { flag: 'retire-exit-code', env: 'FALCONET_RETIRE_EXIT_CODE', ud: 'retireExitCode' },
  shutdownCommand: { flag: 'shutdown-command', env: 'FALCONET_SHUTDOWN_COMMAND', ud: 'shutdownCommand' },
  outputLimit: { flag: 'output-limit', env: 'FALCONET_OUTPUT_LIMIT' },
  spawner: { flag: 'spawner', env: 'FALCONET_SPAWNER', ud: 'spawner' },
  /** A CA to trust for wss:// besides the root CAs: PEM text, or the name of a PEM file. */
  ca: { flag: 'ca', env: 'FALCONET_CA', ud: 'ca' },
  /** When this executor ends and how it leaves (lifetime.ts). */
  lifetime: { flag: 'lifetime', env: 'FALCONET_LIFETIME', ud: 'lifetimeS' },
  drainMargin: { flag: 'drain-margin', env: 'FALCONET_DRAIN_MARGIN', ud: 'drainMarginS' },
  spotGrace: { flag: 'spot-grace', env: 'FALCONET_SPOT_GRACE', ud: 'spotGraceS' },
  noticePoll: { flag: 'notice-poll', env: 'FALCONET_NOTICE_POLL', ud: 'noticePollS' },
} as const satisfies Record<string, SettingSpec>;
export type Setting = keyof typeof SETTINGS;

/**
 * The keys a falconet user-data document may hold. `urls` (the dispatchers, an array) goes with
 * `url`: a dispatcher writes both when it has several, so that an older executor, which knows
 * only `url`, still finds one; a newer one takes `urls`.
 */
export const USER_DATA_KEYS: readonly string[] = [...Object.values(SETTINGS).flatMap((s: SettingSpec) => (s.ud ? [s.ud] : [])), 'urls'];

export interface ImdsOutcome {
  consulted: boolean;
  /** Why it was (or was not) consulted. */
  reason: string;
  reachable?: boolean;
  error?: string;
  identity?: InstanceIdentity;
  /** What the user-data was: none, a falconet document, or something else (ignored). */
  userData?: 'none' | 'falconet' | 'other';
  endpoint?: string;
}

export interface ResolvedExecutorConfig {
  /** What the agent takes (boot phases are the caller's to add). */
  options: ExecutorOptions;
  /** Where each configured setting came from. */
  sources: Partial<Record<Setting, Source>>;
  /** The env file that was read, if any. */
  file?: string;
  imds: ImdsOutcome;
  /** Things worth a log line (unknown user-data keys, an unreadable default env file). */
  warnings: string[];
}

function usage(message: string): never {
  throw new FalconetError(ErrorCode.USAGE, message);
}

/** Parses a systemd-style env file: `KEY=VALUE` lines, `#`/`;` comments, optional `export `, optional quotes. */
export function parseEnvFile(text: string, path: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((line, i) => {
    const s = line.trim();
    if (s === '' || s.startsWith('#') || s.startsWith(';')) return;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(s);
    if (!m) usage(`${path}:${i + 1}: expected KEY=VALUE (got ${JSON.stringify(s.slice(0, 80))})`);
    let value = m[2]!;
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1).replace(/\\(["\\$`])/g, '$1');
    else if (value.length >= 2 && value.startsWith("'") && value.endsWith("'")) value = value.slice(1, -1);
    out[m[1]!] = value;
  });
  return out;
}

/**
 * Reads falconet user-data: a bare JSON object, or one after a first line `#!falconet`.
 * Returns undefined for user-data that is not ours (cloud-config, scripts, MIME multipart).
 */
export function parseUserData(raw: string | undefined): Record<string, unknown> | undefined | null {
  if (raw === undefined) return undefined;
  let text = raw.replace(/^\uFEFF/, '').trim();
  if (text === '') return undefined;
  if (/^#!\s*falconet\b/.test(text)) {
    const nl = text.indexOf('\n');
    text = nl < 0 ? '' : text.slice(nl + 1).trim();
  } else if (!text.startsWith('{')) {
    return null; // not ours
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    usage(`the EC2 user-data is not valid JSON (${(err as Error).message}); expected {"url": "ws://…", …}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) usage('the EC2 user-data must be a JSON object, e.g. {"url": "ws://…"}');
  return doc as Record<string, unknown>;
}

/** Where a raw value came from, for messages. */
function where(setting: Setting, source: Source, file: string | undefined): string {
  const spec: SettingSpec = SETTINGS[setting];
  switch (source) {
    case 'flag':
      return `--${spec.flag}`;
    case 'env':
      return spec.env;
    case 'file':
      return `${spec.env} in ${file}`;
    case 'user-data':
      return `"${spec.ud}" in the EC2 user-data`;
  }
}

function truthy(v: string | undefined): boolean | undefined {
  if (v === undefined || v.trim() === '') return undefined;
  return !/^(0|false|no|off)$/i.test(v.trim());
}

export async function resolveExecutorConfig(flags: ExecutorFlags, env: NodeJS.ProcessEnv, deps: ConfigDeps): Promise<ResolvedExecutorConfig> {
  const warnings: string[] = [];
  const nonEmpty = (v: string | undefined) => (v === undefined || v === '' ? undefined : v);

  // 3. The env file.
  const explicitFile = nonEmpty(flags.config) ?? nonEmpty(env.FALCONET_CONFIG);
  const path = explicitFile ?? DEFAULT_ENV_FILE;
  let fileVars: Record<string, string> = {};
  let file: string | undefined;
  let text: string | undefined;
  try {
    text = await deps.readFile(path);
  } catch (err) {
    if (explicitFile) usage(`cannot read the config file ${path}: ${(err as Error).message}`);
    warnings.push(`cannot read ${path} (${(err as Error).message}); ignoring it`);
  }
  if (text === undefined && explicitFile) usage(`the config file ${path} does not exist`);
  if (text !== undefined) {
    fileVars = parseEnvFile(text, path);
    file = path;
  }

  type Raw = { value: unknown; source: Source };
  const layered = (setting: Setting): Raw | undefined => {
    const spec: SettingSpec = SETTINGS[setting];
    const f = flags[spec.flag];
    if (typeof f === 'string' && f !== '') return { value: f, source: 'flag' };
    const e = nonEmpty(env[spec.env]);
    if (e !== undefined) return { value: e, source: 'env' };
    const v = nonEmpty(fileVars[spec.env]);
    if (v !== undefined) return { value: v, source: 'file' };
    return undefined;
  };

  // 4. IMDS: when is it consulted?
  const imdsSwitch = flags.imds ? true : truthy(env.FALCONET_IMDS) ?? truthy(fileVars.FALCONET_IMDS);
  const disabled = imdsSwitch === false || truthy(env.AWS_EC2_METADATA_DISABLED) === true;
  const endpointSet = nonEmpty(env.AWS_EC2_METADATA_SERVICE_ENDPOINT) !== undefined;
  const urlSoFar = layered('url');
  let reason: string;
  if (disabled) reason = imdsSwitch === false ? 'FALCONET_IMDS=0' : 'AWS_EC2_METADATA_DISABLED';
  else if (imdsSwitch) reason = flags.imds ? '--imds' : 'FALCONET_IMDS=1';
  else if (endpointSet) reason = 'AWS_EC2_METADATA_SERVICE_ENDPOINT is set';
  else if (!urlSoFar) reason = 'no dispatcher URL from flags, environment or env file';
  else reason = 'a dispatcher URL is configured';
  const consult = !disabled && (imdsSwitch === true || endpointSet || !urlSoFar);
  const imds: ImdsOutcome = { consulted: consult, reason };
  let userData: Record<string, unknown> | undefined;
  if (consult) {
    let reader: ImdsReader | undefined;
    try {
      reader = typeof deps.imds === 'function' ? deps.imds() : deps.imds;
      imds.endpoint = reader.endpoint;
      imds.identity = await reader.readInstanceIdentity();
      imds.reachable = true;
    } catch (err) {
      imds.reachable = false;
      imds.error = (err as Error).message;
    }
    if (reader && imds.reachable) {
      let raw: string | undefined;
      try {
        raw = await reader.readUserData();
      } catch (err) {
        warnings.push(`could not read the EC2 user-data: ${(err as Error).message}`);
      }
      const doc = parseUserData(raw);
      imds.userData = doc ? 'falconet' : doc === null ? 'other' : 'none';
      if (doc) {
        userData = doc;
        for (const key of Object.keys(doc)) if (!USER_DATA_KEYS.includes(key)) warnings.push(`the EC2 user-data has an unknown key ${JSON.stringify(key)}; ignored`);
      }
    }
  }

  const sources: Partial<Record<Setting, Source>> = {};
  const raw = (setting: Setting): Raw | undefined => {
    let r = layered(setting);
    const key = (SETTINGS[setting] as SettingSpec).ud;
    if (!r && key && userData && userData[key] !== undefined && userData[key] !== null) r = { value: userData[key], source: 'user-data' };
    if (r) sources[setting] = r.source;
    return r;
  };
  const str = (setting: Setting): string | undefined => {
    const r = raw(setting);
    if (!r) return undefined;
    if (typeof r.value !== 'string' || r.value === '') usage(`${where(setting, r.source, file)} must be a non-empty string (got ${JSON.stringify(r.value)})`);
    return r.value;
  };
  const num = (setting: Setting, o: { min: number; max?: number; integer?: boolean }): number | undefined => {
    const r = raw(setting);
    if (!r) return undefined;
    const n = typeof r.value === 'number' ? r.value : typeof r.value === 'string' && r.value.trim() !== '' ? Number(r.value) : NaN;
    if (!Number.isFinite(n) || (o.integer && !Number.isInteger(n)) || n < o.min || (o.max !== undefined && n > o.max)) {
      const range = o.max !== undefined ? `between ${o.min} and ${o.max}` : `≥ ${o.min}`;
      usage(`${where(setting, r.source, file)} must be ${o.integer ? 'an integer' : 'a number'} ${range} (got ${JSON.stringify(r.value)})`);
    }
    return n;
  };

  // user-data `urls` (the list) wins over its `url` (the first of it, for older executors).
  let rawUrl = raw('url');
  let urlWhere = rawUrl ? where('url', rawUrl.source, file) : '';
  if ((!rawUrl || rawUrl.source === 'user-data') && userData && userData.urls !== undefined && userData.urls !== null) {
    rawUrl = { value: userData.urls, source: 'user-data' };
    sources.url = 'user-data';
    urlWhere = '"urls" in the EC2 user-data';
  }
  if (rawUrl && (typeof rawUrl.value === 'string' ? rawUrl.value === '' : !Array.isArray(rawUrl.value) || !urlWhere.includes('urls'))) {
    usage(urlWhere.includes('urls') ? `${urlWhere} must be an array of ws:// or wss:// URLs (got ${JSON.stringify(rawUrl.value)})` : `${urlWhere} must be a non-empty string (got ${JSON.stringify(rawUrl.value)})`);
  }
  const url = rawUrl?.value as string | string[] | undefined;
  if (!url) {
    const why = !imds.consulted
      ? `IMDS was not consulted (${imds.reason})`
      : imds.reachable === false
        ? `the instance metadata service did not answer (${imds.error})`
        : imds.userData === 'falconet'
          ? 'the EC2 user-data has no "url"'
          : imds.userData === 'other'
            ? 'the EC2 user-data is not a falconet JSON document'
            : 'the instance has no user-data';
    usage(`no dispatcher URL: give --dispatcher URL, FALCONET_URL (environment or ${file ?? DEFAULT_ENV_FILE}), or EC2 user-data {"url": "ws://…"}; ${why}`);
  }
  let urls: string[];
  try {
    // http(s):// was taken before lists existed (ws dials it as ws(s)://): old configs keep working.
    const entries = (typeof url === 'string' ? url.split(',') : url).map((e) => (typeof e === 'string' ? e.trim().replace(/^http(s?):\/\//i, 'ws$1://') : e));
    urls = dispatcherUrls(entries);
  } catch (err) {
    usage(`${urlWhere} must be a ws:// or wss:// URL, or several separated by commas (got ${JSON.stringify(url)}): ${(err as Error).message}`);
  }

  const labels: Record<string, string> = {};
  const rl = raw('labels');
  if (rl) {
    const at = where('labels', rl.source, file);
    if (typeof rl.value === 'string') {
      for (const item of rl.value.split(',').filter((x) => x.trim() !== '')) {
        const eq = item.indexOf('=');
        if (eq <= 0) usage(`${at} takes KEY=VALUE pairs separated by commas (got ${JSON.stringify(item)})`);
        labels[item.slice(0, eq).trim()] = item.slice(eq + 1).trim();
      }
    } else if (rl.value && typeof rl.value === 'object' && !Array.isArray(rl.value)) {
      for (const [k, v] of Object.entries(rl.value)) {
        if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') usage(`${at}: label ${JSON.stringify(k)} must be a string (got ${JSON.stringify(v)})`);
        labels[k] = String(v);
      }
    } else {
      usage(`${at} must be an object of strings or "k=v,k2=v2" (got ${JSON.stringify(rl.value)})`);
    }
  }

  const rr = raw('resources');
  const resources = rr ? parseResources(rr.value, where('resources', rr.source, file)) : undefined;

  const mode = str('mode') ?? 'push';
  if (mode !== 'push' && mode !== 'pull') usage(`${where('mode', sources.mode!, file)} must be push or pull (got ${JSON.stringify(mode)})`);
  const dispatcherOrder = str('dispatcherOrder') ?? 'random';
  if (dispatcherOrder !== 'random' && dispatcherOrder !== 'first') usage(`${where('dispatcherOrder', sources.dispatcherOrder!, file)} must be random or first (got ${JSON.stringify(dispatcherOrder)})`);

  const spawner = str('spawner');
  if (spawner !== undefined && spawner !== 'helper' && spawner !== 'node') usage(`${where('spawner', sources.spawner!, file)} must be helper or node (got ${JSON.stringify(spawner)})`);

  const slots = num('slots', { min: 1, max: 1_000_000, integer: true });
  const idleExit = num('idleExit', { min: 0 });
  const dispatcherTimeout = num('dispatcherTimeout', { min: 0 });
  const retireExitCode = num('retireExitCode', { min: 0, max: 255, integer: true });
  const outputLimit = num('outputLimit', { min: 0, integer: true });
  const lifetime = num('lifetime', { min: 0 });
  const drainMargin = num('drainMargin', { min: 0 });
  const spotGrace = num('spotGrace', { min: 0 });
  const noticePoll = num('noticePoll', { min: 0.05 });
  if (outputLimit !== undefined && outputLimit > LIMITS.outputBytes) {
    // What a task prints travels in one result, whose stdout and stderr the protocol bounds.
    usage(`${where('outputLimit', sources.outputLimit!, file)} must be at most ${LIMITS.outputBytes} bytes (1 MiB, the protocol's limit on one result's stdout or stderr); got ${outputLimit}`);
  }
  const token = str('token');
  const id = str('id');
  const shutdownCommand = str('shutdownCommand');
  // The CA: PEM text as it is (user-data carries it so), or a file read now (an env file cannot
  // hold a multi-line PEM: FALCONET_CA=/etc/falconet/ca.pem).
  let ca = str('ca');
  if (ca !== undefined) {
    const at = where('ca', sources.ca!, file);
    if (!isPem(ca)) {
      let text: string | undefined;
      try {
        text = await deps.readFile(ca);
      } catch (err) {
        usage(`${at}: cannot read the CA file ${ca}: ${(err as Error).message}`);
      }
      if (text === undefined) usage(`${at}: the CA file ${ca} does not exist`);
      ca = text;
    }
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) usage(`${at} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  }

  const identity = imds.identity;
  const addresses = identity ? [identity.localIpv4, identity.publicIpv4].filter((a): a is string => !!a) : [];
  const options: ExecutorOptions = {
    // One URL as it was given; several as one comma-separated string of checked URLs.
    url: urls.join(','),
    ...(token !== undefined ? { token } : {}),
    ...(id !== undefined ? { id } : identity ? { id: identity.instanceId } : {}),
    ...(slots !== undefined ? { slots } : {}),
    labels,
    ...(resources !== undefined ? { resources } : {}),
    mode,
    dispatcherOrder,
    idleExitMs: (idleExit ?? 0) * 1000,
    dispatcherTimeoutMs: (dispatcherTimeout ?? 0) * 1000,
    retireExitCode: retireExitCode ?? 0,
    ...(shutdownCommand !== undefined ? { shutdownCommand } : {}),
    ...(outputLimit !== undefined ? { outputLimit } : {}),
    ...(spawner !== undefined ? { spawner } : {}),
    ...(ca !== undefined ? { ca } : {}),
    ...(identity ? { instanceId: identity.instanceId } : {}),
    ...(addresses.length ? { addresses } : {}),
    ...(lifetime !== undefined ? { lifetimeMs: lifetime * 1000 } : {}),
    ...(drainMargin !== undefined ? { drainMarginMs: drainMargin * 1000 } : {}),
    ...(spotGrace !== undefined ? { spotGraceMs: spotGrace * 1000 } : {}),
    ...(noticePoll !== undefined ? { noticePollMs: noticePoll * 1000 } : {}),
    // On EC2 (the metadata service answered): watch it for interruption notices and events.
    ...(identity && imds.endpoint ? { noticeEndpoint: imds.endpoint } : {}),
  };
  return { options, sources, ...(file ? { file } : {}), imds, warnings };
}

/** readFile for {@link ConfigDeps}: undefined when the file does not exist. */
export async function readFileIfExists(path: string): Promise<string | undefined> {
  try {
    return await fsReadFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** The real dependencies: the filesystem and the instance metadata service of `env`. */
export function defaultConfigDeps(env: NodeJS.ProcessEnv = process.env): ConfigDeps {
  return { readFile: readFileIfExists, imds: () => new Imds({ env }) };
}
