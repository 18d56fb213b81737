/**
 * A small IMDSv2 reader for executors on EC2, on `@aws-sdk/ec2-metadata-service`: a session token
 * is fetched with `PUT /latest/api/token`, then every GET carries it (IMDSv1 is never used).
 *
 * The endpoint is the SDK's: `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else
 * `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6` → `http://[fd00:ec2::254]`, else
 * `http://169.254.169.254`.
 *
 * Timeouts are short and the first request is never retried, so a host that is not on EC2 finds
 * out in about a second (`probeTimeoutMs`); once the service has answered, later reads retry twice.
 */
import type { MetadataService } from '@aws-sdk/ec2-metadata-service';

export interface InstanceIdentity {
  instanceId: string;
  localIpv4: string;
  /** Absent when the instance has no public address (IMDS answers 404). */
  publicIpv4?: string;
  instanceType: string;
  availabilityZone: string;
}

export interface ImdsOptions {
  /** Base URL of the metadata service; default as described above. */
  endpoint?: string;
  /** Per-request timeout (connect and response) in ms; default 1000. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** What the executor's configuration needs from IMDS; tests pass fakes of it. */
export interface ImdsReader {
  readonly endpoint: string;
  readInstanceIdentity(): Promise<InstanceIdentity>;
  /** The raw user-data; undefined when the instance has none (404). */
  readUserData(): Promise<string | undefined>;
}

export function imdsEndpoint(env: NodeJS.ProcessEnv = process.env): string {
  const configured = env.AWS_EC2_METADATA_SERVICE_ENDPOINT?.trim();
  if (configured) return configured;
  return env.AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE?.toLowerCase() === 'ipv6' ? 'http://[fd00:ec2::254]' : 'http://169.254.169.254';
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

/** One metadata service endpoint. */
export class Imds implements ImdsReader {
  readonly endpoint: string;
  /**
   * The unretried probe and the retrying reader, made at the first request: the SDK is loaded
   * then, not when the executor starts (off EC2 it is never needed).
   */
  #services: Promise<{ probe: MetadataService; reader: MetadataService }> | null = null;
  readonly #common: ConstructorParameters<typeof MetadataService>[0];
  /** Prefix that makes `MetadataService` (which sends `endpoint.pathname + path`) ask for `/latest/...`, not `//latest/...`. */
  readonly #prefix: string;
  #reachable = false;

  constructor(o: ImdsOptions = {}) {
    this.endpoint = o.endpoint ?? imdsEndpoint(o.env);
    let pathname: string;
    try {
      pathname = new URL(this.endpoint).pathname;
    } catch {
      throw new Error(`bad metadata service endpoint ${JSON.stringify(this.endpoint)}`);
    }
    this.#prefix = pathname.endsWith('/') ? 'latest/' : '/latest/';
    this.#common = {
      endpoint: this.endpoint,
      httpOptions: { timeout: o.timeoutMs ?? 1000 },
      ec2MetadataV1Disabled: true, // IMDSv2 only: a failed token PUT is an answer, not a reason to try v1
      tokenTtl: 300,
    };
  }

  #load(): Promise<{ probe: MetadataService; reader: MetadataService }> {
    this.#services ??= import('@aws-sdk/ec2-metadata-service').then(
      ({ MetadataService }) => ({ probe: new MetadataService({ ...this.#common, retries: 0 }), reader: new MetadataService({ ...this.#common, retries: 2, backoff: 0.2 }) }),
      (err: unknown) => {
        this.#services = null; // the next request tries again
        throw err;
      },
    );
    return this.#services;
  }

  /** GETs `/latest/<path>`; undefined on 404. */
  async get(path: string): Promise<string | undefined> {
    try {
      const { probe, reader } = await this.#load();
      const service = this.#reachable ? reader : probe;
      const body = await service.request(this.#prefix + path, {});
      this.#reachable = true;
      return body;
    } catch (err) {
      if (statusOf(err) === 404) {
        this.#reachable = true;
        return undefined;
      }
      throw new Error(`instance metadata service at ${this.endpoint}: ${(err as Error).message}`, { cause: err });
    }
  }

  async readInstanceIdentity(): Promise<InstanceIdentity> {
    // One document carries most of it (and is the first, unretried, probe).
    const raw = await this.get('dynamic/instance-identity/document');
    if (raw === undefined) throw new Error(`instance metadata service at ${this.endpoint}: no instance identity document`);
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(raw) as Record<string, unknown>;
    } catch {
      throw new Error(`instance metadata service at ${this.endpoint}: the instance identity document is not JSON`);
    }
    const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
    const [publicIpv4, localIpv4] = await Promise.all([
      this.get('meta-data/public-ipv4'),
      str(doc.privateIp) ? Promise.resolve(str(doc.privateIp)) : this.get('meta-data/local-ipv4'),
    ]);
    const instanceId = str(doc.instanceId) ?? (await this.get('meta-data/instance-id'));
    if (!instanceId) throw new Error(`instance metadata service at ${this.endpoint}: no instance id`);
    return {
      instanceId,
      localIpv4: localIpv4 ?? '',
      ...(publicIpv4 ? { publicIpv4: publicIpv4.trim() } : {}),
      instanceType: str(doc.instanceType) ?? '',
      availabilityZone: str(doc.availabilityZone) ?? '',
    };
  }

  readUserData(): Promise<string | undefined> {
    return this.get('user-data');
  }
}

/** The instance's raw user-data (undefined when it has none). */
export function readUserData(o: ImdsOptions = {}): Promise<string | undefined> {
  return new Imds(o).readUserData();
}

/** Instance id, addresses, type and zone of this instance. */
export function readInstanceIdentity(o: ImdsOptions = {}): Promise<InstanceIdentity> {
  return new Imds(o).readInstanceIdentity();
}
