/**
 * A fake EC2 instance metadata service (IMDSv2) for tests.
 *
 * It speaks the same HTTP dialect as the real service at 169.254.169.254 closely
 * enough for `@aws-sdk/ec2-metadata-service` and the SDK's IMDS credential
 * provider (both honour `AWS_EC2_METADATA_SERVICE_ENDPOINT`): a session token is
 * obtained with `PUT /latest/api/token` and every GET must carry it.
 *
 * @module
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';

/** What one instance's metadata looks like; read afresh on every request. */
export interface ImdsView {
  instanceId: string;
  imageId: string;
  instanceType: string;
  availabilityZone: string;
  region: string;
  accountId: string;
  localIpv4: string;
  /** Absent means the instance has no public address: `public-ipv4` is then 404, as on EC2. */
  publicIpv4?: string;
  /** Decoded user data; empty or absent makes `/latest/user-data` 404, as on EC2. */
  userData?: Buffer;
  pendingTime: Date;
  lifecycle: 'on-demand' | 'spot';
  /** Role name of the instance profile; enables `iam/info` and `iam/security-credentials/`. */
  iamRole?: string;
  /** Instance tags, served under `tags/instance/` only when `tagsInMetadata` is set. */
  tags?: Record<string, string>;
  tagsInMetadata?: boolean;
  /** Set when a spot interruption is pending: served as `spot/instance-action` (404 otherwise). */
  spotInstanceAction?: { action: 'terminate' | 'stop' | 'hibernate'; time: string };
  /** Served as `events/maintenance/scheduled` (`[]` when absent, as on EC2). */
  scheduledEvents?: ScheduledEvent[];
}

/** One scheduled event as IMDS lists it; times like `21 Jan 2019 09:00:43 GMT`. */
export interface ScheduledEvent {
  Code: 'instance-reboot' | 'system-reboot' | 'system-maintenance' | 'instance-retirement' | 'instance-stop';
  Description: string;
  EventId: string;
  NotBefore: string;
  NotAfter?: string;
  State: 'active' | 'completed' | 'canceled';
}

/** An IMDS event time (`21 Jan 2019 09:00:43 GMT`). */
export function eventTime(d: Date): string {
  const [, day, mon, year, time] = d.toUTCString().split(' ');
  return `${day} ${mon} ${year} ${time} GMT`;
}

/** A spot interruption notice's time (`2017-09-18T08:22:00Z`). */
export function noticeTime(d: Date): string {
  return imdsTime(d);
}

/** Options for {@link ImdsDouble.start}. */
export interface ImdsDoubleOptions {
  /** `required` (default) answers 401 to GETs without a valid token, like `HttpTokens=required`. */
  httpTokens?: 'required' | 'optional';
  /** Address to bind; defaults to 127.0.0.1 (tests must never listen elsewhere). */
  host?: string;
  port?: number;
}

/** The real service caps token lifetimes at six hours. */
const MAX_TTL_SECONDS = 21600;

/** IMDS timestamps carry no fractional seconds (`2024-05-01T12:00:00Z`). */
function imdsTime(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Leaf paths (below `/latest/`) and their bodies for one view. */
function leaves(v: ImdsView): Map<string, string | Buffer> {
  const m = new Map<string, string | Buffer>();
  const md = (k: string, val: string) => m.set(`meta-data/${k}`, val);
  const host = `ip-${v.localIpv4.replaceAll('.', '-')}.ec2.internal`;
  md('ami-id', v.imageId);
  md('instance-id', v.instanceId);
  md('instance-type', v.instanceType);
  md('instance-life-cycle', v.lifecycle);
  md('local-ipv4', v.localIpv4);
  md('local-hostname', host);
  md('hostname', host);
  md('placement/availability-zone', v.availabilityZone);
  md('placement/region', v.region);
  md('services/domain', 'amazonaws.com');
  if (v.publicIpv4) md('public-ipv4', v.publicIpv4);
  if (v.spotInstanceAction) md('spot/instance-action', JSON.stringify(v.spotInstanceAction));
  md('events/maintenance/scheduled', JSON.stringify(v.scheduledEvents ?? []));
  if (v.tagsInMetadata) for (const [k, val] of Object.entries(v.tags ?? {})) md(`tags/instance/${k}`, val);
  if (v.iamRole) {
    const now = new Date();
    md('iam/info', JSON.stringify({
      Code: 'Success', LastUpdated: imdsTime(now),
      InstanceProfileArn: `arn:aws:iam::${v.accountId}:instance-profile/${v.iamRole}`,
      InstanceProfileId: 'AIPA' + v.instanceId.slice(2).toUpperCase(),
    }));
    // Shape read by @smithy/credential-provider-imds: fake but well-formed keys.
    md(`iam/security-credentials/${v.iamRole}`, JSON.stringify({
      Code: 'Success', LastUpdated: imdsTime(now), Type: 'AWS-HMAC',
      AccessKeyId: 'ASIAFAKE' + v.instanceId.slice(2, 14).toUpperCase(),
      SecretAccessKey: 'fake-secret-' + v.instanceId, Token: 'fake-session-token-' + v.instanceId,
      Expiration: imdsTime(new Date(now.getTime() + 6 * 3600_000)),
    }));
  }
  if (v.userData && v.userData.length > 0) m.set('user-data', v.userData);
  m.set('dynamic/instance-identity/document', JSON.stringify({
    accountId: v.accountId, architecture: 'x86_64', availabilityZone: v.availabilityZone,
    billingProducts: null, devpayProductCodes: null, marketplaceProductCodes: null,
    imageId: v.imageId, instanceId: v.instanceId, instanceType: v.instanceType, kernelId: null,
    pendingTime: imdsTime(v.pendingTime), privateIp: v.localIpv4, ramdiskId: null,
    region: v.region, version: '2017-09-30',
  }, null, 2));
  return m;
}

/** Directory listing as IMDS gives it: one child a line, sub-directories with a trailing slash. */
function listing(all: Map<string, string | Buffer>, dir: string): string | undefined {
  const prefix = dir === '' ? '' : dir.endsWith('/') ? dir : dir + '/';
  const children = new Set<string>();
  for (const key of all.keys()) {
    if (!key.startsWith(prefix)) continue;
    const rest = key.slice(prefix.length);
    const slash = rest.indexOf('/');
    children.add(slash < 0 ? rest : rest.slice(0, slash + 1));
  }
  return children.size > 0 ? [...children].join('\n') : undefined;
}

/**
 * One fake IMDS endpoint. Create it with {@link ImdsDouble.start}; point a
 * process at it with `AWS_EC2_METADATA_SERVICE_ENDPOINT=<endpoint>`.
 */
export class ImdsDouble {
  /** Base URL, e.g. `http://127.0.0.1:41234` (no trailing slash). */
  readonly endpoint: string;
  /** Count of requests served, by kind; handy to assert that a client used tokens. */
  readonly stats = { tokens: 0, gets: 0, unauthorized: 0 };
  private readonly tokens = new Map<string, number>();
  /** Fields posted with {@link notice}, served over the source's. */
  private overlay: Partial<ImdsView> = {};

  private constructor(
    private readonly server: Server,
    private readonly source: () => ImdsView,
    private readonly opts: ImdsDoubleOptions,
  ) {
    const addr = server.address() as AddressInfo;
    this.endpoint = `http://${addr.address}:${addr.port}`;
  }

  /** Starts a server that serves `source` (a value, or a function read on every request). */
  static async start(source: ImdsView | (() => ImdsView), opts: ImdsDoubleOptions = {}): Promise<ImdsDouble> {
    const read = typeof source === 'function' ? source : () => source;
    let self: ImdsDouble | undefined;
    const server = createServer((req, res) => self!.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
    });
    self = new ImdsDouble(server, read, opts);
    return self;
  }

  /**
   * Posts (or, with undefined values, withdraws) fields over what the source says, from the next
   * request on: `notice({spotInstanceAction: {action: 'terminate', time}})` is a spot interruption.
   */
  notice(patch: Partial<ImdsView>): void {
    this.overlay = { ...this.overlay, ...patch };
  }

  /** Stops listening and drops idle keep-alive sockets so the test process can exit. */
  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const send = (status: number, body: string | Buffer = '', headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'text/plain', ...headers });
      res.end(body);
    };
    // @aws-sdk/ec2-metadata-service joins "/" + "/latest/..." and so asks for "//latest/...".
    // Not `new URL(req.url, base)`: that would read "//latest/..." as a host name.
    const path = (req.url ?? '/').split('?')[0]!.replace(/^\/+/, '/');
    req.resume();
    if (path === '/latest/api/token') {
      if (req.method !== 'PUT') return send(405, '', { allow: 'OPTIONS, PUT' });
      // The real service refuses tokens to anything that looks proxied.
      if (req.headers['x-forwarded-for'] !== undefined) return send(403, 'Forbidden');
      const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TTL_SECONDS) return send(400, 'Bad Request');
      const token = randomBytes(32).toString('base64');
      this.tokens.set(token, Date.now() + ttl * 1000);
      this.stats.tokens++;
      return send(200, token, { 'x-aws-ec2-metadata-token-ttl-seconds': String(ttl) });
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, '', { allow: 'OPTIONS, GET, HEAD, PUT' });
    const token = req.headers['x-aws-ec2-metadata-token'];
    const expiry = typeof token === 'string' ? this.tokens.get(token) : undefined;
    const valid = expiry !== undefined && expiry > Date.now();
    // A presented but invalid token is rejected even when tokens are optional, as on EC2.
    if (!valid && (token !== undefined || (this.opts.httpTokens ?? 'required') === 'required')) {
      this.stats.unauthorized++;
      return send(401, 'Unauthorized');
    }
    this.stats.gets++;
    if (!path.startsWith('/latest/')) return send(404, 'Not Found');
    const rel = path.slice('/latest/'.length);
    const all = leaves({ ...this.source(), ...this.overlay });
    const leaf = all.get(rel.replace(/\/$/, ''));
    if (leaf !== undefined && !rel.endsWith('/')) {
      const json = rel === 'dynamic/instance-identity/document';
      return send(200, leaf, json ? { 'content-type': 'application/json' } : {});
    }
    // user-data has no listing: it is a leaf or a 404.
    const list = rel.startsWith('user-data') ? undefined : listing(all, rel);
    return list === undefined ? send(404, 'Not Found') : send(200, list);
  }
}
