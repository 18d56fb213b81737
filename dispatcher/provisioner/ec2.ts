/**
 * The EC2 backend, through @aws-sdk/client-ec2 with the SDK's standard configuration: region
 * and credentials from its default chain, `AWS_ENDPOINT_URL_EC2` for another endpoint (a double
 * in tests). Instances are launched from a baked AMI (or a launch template) with user-data that
 * tells the executor where to dial, tagged with this dispatcher's cluster name so a restarted
 * dispatcher finds them again, and set to terminate when the executor shuts the instance down.
 */
import {
  DescribeInstancesCommand,
  EC2Client,
  GetConsoleOutputCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type RunInstancesCommandInput,
} from '@aws-sdk/client-ec2';
import { randomUUID } from 'node:crypto';
import { ErrorCode, FalconetError } from '../../protocol/errors.js';
import type { Backend, CloudState } from './backend.js';
import type { InstanceType } from './instance-types.js';

/** The tag naming the dispatcher (cluster) an instance belongs to. */
export const CLUSTER_TAG = 'falconet:cluster';

export interface Ec2Options {
  cluster: string;
  imageId?: string;
  launchTemplate?: string;
  instanceType?: string;
  subnetId?: string;
  securityGroupIds?: string[];
  instanceProfile?: string;
  keyName?: string;
  spot?: boolean;
  /** What the executor on the instance reads from its user-data (ami/README.md). */
  userData: ExecutorUserDataInput;
  /** Attempts per API call, throttling and capacity errors included (the SDK backs off between). */
  maxAttempts?: number;
  region?: string;
}

/** What the provisioner puts in an instance's user-data; see {@link executorUserData}. */
export interface ExecutorUserDataInput {
  /** The dispatchers the executor dials (at least one; several when dispatchers share a store). */
  urls: string[];
  token?: string;
  labels?: Record<string, string>;
  slots?: number;
  idleExitS?: number;
  dispatcherTimeoutS?: number;
  retireExitCode?: number;
  /** PEM CA certificate(s) the executor trusts the dispatcher's wss:// with. */
  ca?: string;
  /** `first`: dial `urls` in order (stay with the provisioner's dispatcher while it lives). */
  dispatcherOrder?: 'first' | 'random';
}

/**
 * The user-data document of one launch: `url` always (the first dispatcher: what an executor
 * from an older AMI reads), and `urls` too when there are several (a newer executor takes the
 * list and fails over along it); a type's resources when launching a type.
 */
export function executorUserData(input: ExecutorUserDataInput, type?: InstanceType): Record<string, unknown> {
  const { urls, ...rest } = input;
  if (urls.length === 0) throw new FalconetError(ErrorCode.INTERNAL, 'EC2 user-data without a dispatcher URL');
  return { url: urls[0], ...(urls.length > 1 ? { urls: [...urls] } : {}), ...rest, ...(type ? { resources: { ...type.resources } } : {}) };
}

export class Ec2Backend implements Backend {
  readonly kind = 'ec2';
  readonly #ec2: EC2Client;

  /** The dispatchers written into the next launches' user-data ({@link setUrls}). */
  #urls: string[];

  constructor(private readonly o: Ec2Options) {
    this.#urls = [...o.userData.urls];
    this.#ec2 = new EC2Client({ maxAttempts: o.maxAttempts ?? 5, ...(o.region ? { region: o.region } : {}) });
  }

  /**
   * The dispatchers that instances launched from now on are given (the live list, when several
   * dispatchers share a store); instances already running keep theirs and fail over along it.
   */
  setUrls(urls: string[]): void {
    if (urls.length === 0) throw new FalconetError(ErrorCode.INTERNAL, 'setUrls needs at least one dispatcher URL');
    this.#urls = [...urls];
  }

  async launch(count: number, type?: InstanceType): Promise<string[]> {
    // A type's executors advertise its resources (user-data `resources`), whatever they detect.
    const userData = executorUserData({ ...this.o.userData, urls: this.#urls }, type);
    const instanceType = type?.name ?? this.o.instanceType;
    const input: RunInstancesCommandInput = {
      MinCount: 1,
      MaxCount: count,
      ...(this.o.launchTemplate
        ? { LaunchTemplate: this.o.launchTemplate.startsWith('lt-') ? { LaunchTemplateId: this.o.launchTemplate } : { LaunchTemplateName: this.o.launchTemplate } }
        : {}),
      ...(this.o.imageId ? { ImageId: this.o.imageId } : {}),
      ...(instanceType ? { InstanceType: instanceType as RunInstancesCommandInput['InstanceType'] } : {}),
      ...(this.o.subnetId ? { SubnetId: this.o.subnetId } : {}),
      ...(this.o.securityGroupIds?.length ? { SecurityGroupIds: this.o.securityGroupIds } : {}),
      ...(this.o.instanceProfile
        ? { IamInstanceProfile: this.o.instanceProfile.startsWith('arn:') ? { Arn: this.o.instanceProfile } : { Name: this.o.instanceProfile } }
        : {}),
      ...(this.o.keyName ? { KeyName: this.o.keyName } : {}),
      ...(this.o.spot ? { InstanceMarketOptions: { MarketType: 'spot', SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate' } } } : {}),
      // The executor powers the instance off when it retires; that must end the bill.
      InstanceInitiatedShutdownBehavior: 'terminate',
      UserData: Buffer.from(JSON.stringify(userData)).toString('base64'),
      TagSpecifications: [
        {
          ResourceType: 'instance',
          Tags: [
            { Key: CLUSTER_TAG, Value: this.o.cluster },
            { Key: 'Name', Value: `falconet-executor-${this.o.cluster}` },
          ],
        },
      ],
      // Idempotent across the SDK's own retries of this one call.
      ClientToken: randomUUID(),
    };
    const out = await this.#ec2.send(new RunInstancesCommand(input));
    return (out.Instances ?? []).map((i) => i.InstanceId!).filter(Boolean);
  }

  async terminate(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    try {
      await this.#ec2.send(new TerminateInstancesCommand({ InstanceIds: ids }));
    } catch (err) {
      // Already gone is what we wanted.
      if (!/InvalidInstanceID\.NotFound/.test((err as Error).name)) throw err;
    }
  }

  async consoleOutput(id: string): Promise<string> {
    const out = await this.#ec2.send(new GetConsoleOutputCommand({ InstanceId: id, Latest: true }));
    return out.Output ? Buffer.from(out.Output, 'base64').toString('utf8') : '';
  }

  async list(): Promise<Map<string, CloudState>> {
    const states = new Map<string, CloudState>();
    let token: string | undefined;
    do {
      const out = await this.#ec2.send(
        new DescribeInstancesCommand({
          Filters: [
            { Name: `tag:${CLUSTER_TAG}`, Values: [this.o.cluster] },
            { Name: 'instance-state-name', Values: ['pending', 'running', 'shutting-down', 'stopping', 'stopped'] },
          ],
          ...(token ? { NextToken: token } : {}),
        }),
      );
      for (const r of out.Reservations ?? []) {
        for (const i of r.Instances ?? []) {
          const s = i.State?.Name;
          states.set(i.InstanceId!, s === 'pending' ? 'pending' : s === 'running' ? 'running' : 'gone');
        }
      }
      token = out.NextToken;
    } while (token);
    return states;
  }

  async close(): Promise<void> {
    this.#ec2.destroy();
  }
}
