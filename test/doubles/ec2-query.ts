/**
 * EC2 Query API wire helpers for the EC2 double: request parameter parsing and
 * validation, and the XML that @aws-sdk/client-ec2 deserializes. Requests are
 * `POST /` form bodies (`Action=…&Version=2016-11-15`, lists flattened as
 * `Name.N[.Sub]`); errors are `<Response><Errors><Error><Code>…` plus a 4xx/5xx
 * status, which the SDK's query protocol reads as the error name. Element names
 * are the `xmlName`s of the SDK's schemas (e.g. `Instance$`: `instanceState`,
 * `dnsName`, `ipAddress`, `reason`, `tagSet`; lists hold `<item>`s).
 *
 * @module
 */
import type { ChildProcess } from 'node:child_process';
import type { ImdsDouble, ImdsView } from './imds-double.js';

/** EC2 instance state names; codes are `STATE_CODES`. */
export type InstanceStateName = 'pending' | 'running' | 'shutting-down' | 'terminated' | 'stopping' | 'stopped';
export const STATE_CODES: Record<InstanceStateName, number> = {
  pending: 0, running: 16, 'shutting-down': 32, terminated: 48, stopping: 64, stopped: 80,
};
const NS = 'http://ec2.amazonaws.com/doc/2016-11-15/';

/** An API error: becomes `<Response><Errors><Error>` with this HTTP status. */
export class Ec2Error extends Error {
  constructor(readonly code: string, message: string, readonly status: number) { super(message); }
}

/** EC2's status for a code: throttling and unavailability are 503, capacity and internal errors 500. */
export function defaultStatus(code: string): number {
  if (code === 'RequestLimitExceeded' || code === 'Unavailable' || code === 'ServiceUnavailable') return 503;
  if (/^Insufficient|^InternalError$|^ServerInternal/.test(code)) return 500;
  return 400;
}

/** What RunInstances asked for, per instance. */
export interface LaunchSpec {
  imageId: string; instanceType: string; subnetId: string; vpcId: string;
  securityGroupIds: string[]; keyName?: string; iamRole?: string; iamArn?: string;
  userData: Buffer; spot: boolean; shutdownBehavior: 'stop' | 'terminate'; tags: Record<string, string>;
  clientToken?: string; launchTemplateId?: string; httpTokens?: 'required' | 'optional'; tagsInMetadata: boolean;
}

/** A read-only snapshot of one instance, as {@link Ec2Double.instances} returns it. */
export interface DoubleInstance {
  instanceId: string;
  reservationId: string;
  imageId: string;
  instanceType: string;
  state: InstanceStateName;
  /** e.g. `Client.InstanceInitiatedShutdown`, `Client.UserInitiatedShutdown`, `Server.SpotInstanceTermination`. */
  stateReason?: string;
  tags: Record<string, string>;
  /** Decoded user data. */
  userData: string;
  spot: boolean;
  shutdownBehavior: 'stop' | 'terminate';
  securityGroupIds: string[];
  subnetId: string;
  keyName?: string;
  iamRole?: string;
  launchTemplateId?: string;
  clientToken?: string;
  privateIpAddress: string;
  launchTime: Date;
  /** Process id of the instance's main process (also its process-group id); unset until running. */
  pid?: number;
  exitCode?: number | null;
  exitSignal?: NodeJS.Signals | null;
  /** Captured stdout+stderr (the last `consoleLimitBytes`). */
  console: string;
  /** Base URL of this instance's fake IMDS. */
  imdsEndpoint: string;
}

/** The double's mutable record of one instance. */
export interface Inst extends LaunchSpec {
  id: string; reservationId: string; launchIndex: number; state: InstanceStateName; launchTime: Date;
  privateIp: string; publicIp?: string; az: string; boot?: 'pending' | 'silent';
  reason?: string; final?: 'terminated' | 'stopped'; zombie?: boolean;
  child?: ChildProcess; pid?: number; exitCode?: number | null; exitSignal?: NodeJS.Signals | null;
  console: Buffer[]; consoleBytes: number; consoleAt?: Date; imds?: ImdsDouble;
  spotAction?: { action: 'terminate'; time: string };
}

const esc = (s: string) => s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
const el = (name: string, v: string | number | boolean | undefined) => (v === undefined ? '' : `<${name}>${typeof v === 'string' ? esc(v) : v}</${name}>`);
const items = (name: string, parts: string[]) => (parts.length ? `<${name}>${parts.map((p) => `<item>${p}</item>`).join('')}</${name}>` : `<${name}/>`);
const bad = (message: string, code = 'InvalidParameterValue') => new Ec2Error(code, message, 400);

/** The `N`s of `Prefix.N` / `Prefix.N.Sub` keys, ascending. */
export function indices(p: Record<string, string>, prefix: string): number[] {
  const re = new RegExp(`^${prefix.replace(/\./g, '\\.')}\\.(\\d+)(\\.|$)`);
  const ns = new Set<number>();
  for (const k of Object.keys(p)) { const m = re.exec(k); if (m) ns.add(Number(m[1])); }
  return [...ns].sort((a, b) => a - b);
}
/** Values of a flattened list `Prefix.1=…&Prefix.2=…`. */
export const list = (p: Record<string, string>, prefix: string) => indices(p, prefix).map((n) => p[`${prefix}.${n}`] ?? '');

/** Tags of `Prefix.N.Key`/`Prefix.N.Value`, validated as EC2 does. */
export function tagsFrom(p: Record<string, string>, prefix: string): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const n of indices(p, prefix)) {
    const key = p[`${prefix}.${n}.Key`] ?? '';
    const value = p[`${prefix}.${n}.Value`] ?? '';
    if (!key || key.length > 128) throw bad(`Tag key must be 1 to 128 characters: '${key}'`);
    if (key.toLowerCase().startsWith('aws:')) throw bad("Tag keys starting with 'aws:' are reserved for internal use");
    if (value.length > 256) throw bad(`Tag value exceeds the maximum length of 256 characters`);
    tags[key] = value;
  }
  return tags;
}
/** Merges tags into a resource, keeping EC2's limit of 50 per resource. */
export function applyTags(target: Record<string, string>, tags: Record<string, string>): void {
  if (Object.keys({ ...target, ...tags }).length > 50) throw new Ec2Error('TagLimitExceeded', 'The maximum number of Tags for a resource has been reached.', 400);
  Object.assign(target, tags);
}

/** Fails the call on any malformed instance ID, as EC2 does before looking anything up. */
export function checkIds(ids: string[]): void {
  const badId = ids.find((id) => !/^i-([0-9a-f]{8}|[0-9a-f]{17})$/.test(id));
  if (badId !== undefined) throw new Ec2Error('InvalidInstanceID.Malformed', `Invalid id: "${badId}"`, 400);
}

/** EC2 fails the whole call if any ID is malformed or unknown. */
export function lookup(insts: Map<string, Inst>, ids: string[]): Inst[] {
  checkIds(ids);
  const missing = ids.filter((id) => !insts.has(id));
  if (missing.length === 1) throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${missing[0]}' does not exist`, 400);
  if (missing.length > 1) throw new Ec2Error('InvalidInstanceID.NotFound', `The instance IDs '${missing.join(', ')}' do not exist`, 400);
  return ids.map((id) => insts.get(id)!);
}

type Template = { id: string; name: string; imageId: string; instanceType?: string; userData?: string };

/** Parses and validates a RunInstances request. */
export function parseRun(p: Record<string, string>, templates: Template[], defaultShutdown: 'stop' | 'terminate') {
  const minCount = Number(p.MinCount), maxCount = Number(p.MaxCount);
  if (p.MinCount === undefined) throw bad('The request must contain the parameter MinCount', 'MissingParameter');
  if (p.MaxCount === undefined) throw bad('The request must contain the parameter MaxCount', 'MissingParameter');
  if (!(minCount >= 1) || !(maxCount >= minCount)) throw bad(`Invalid MinCount/MaxCount: ${p.MinCount}/${p.MaxCount}`);
  let tpl: Template | undefined;
  const tplId = p['LaunchTemplate.LaunchTemplateId'], tplName = p['LaunchTemplate.LaunchTemplateName'];
  if (tplId !== undefined) {
    tpl = templates.find((t) => t.id === tplId);
    if (!tpl) throw bad(`The specified launch template, with template ID ${tplId}, does not exist.`, 'InvalidLaunchTemplateId.NotFound');
  } else if (tplName !== undefined) {
    tpl = templates.find((t) => t.name === tplName);
    if (!tpl) throw bad(`The specified launch template, with template name ${tplName}, does not exist.`, 'InvalidLaunchTemplateName.NotFoundException');
  }
  const imageId = p.ImageId ?? tpl?.imageId;
  if (imageId === undefined) throw bad('The request must contain the parameter ImageId', 'MissingParameter');
  if (!/^ami-([0-9a-f]{8}|[0-9a-f]{17})$/.test(imageId)) throw new Ec2Error('InvalidAMIID.Malformed', `Invalid id: "${imageId}" (expecting "ami-...")`, 400);
  const ud = p.UserData ?? tpl?.userData ?? '';
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(ud) || ud.length % 4 !== 0) throw bad('Invalid BASE64 encoding of user data.');
  const userData = Buffer.from(ud, 'base64');
  if (userData.length > 16384) throw bad('User data is limited to 16384 bytes');
  const shutdown = p.InstanceInitiatedShutdownBehavior ?? defaultShutdown;
  if (shutdown !== 'stop' && shutdown !== 'terminate') throw bad(`Value (${shutdown}) for parameter instanceInitiatedShutdownBehavior is invalid.`);
  const market = p['InstanceMarketOptions.MarketType'];
  if (market !== undefined && market !== 'spot' && market !== 'capacity-block') throw bad(`Value (${market}) for parameter marketType is invalid.`);
  const tags: Record<string, string> = {};
  for (const n of indices(p, 'TagSpecification')) {
    const type = p[`TagSpecification.${n}.ResourceType`];
    if (!type) throw bad('Tag specification resource type must have a value', 'InvalidParameterValue');
    const t = tagsFrom(p, `TagSpecification.${n}.Tag`);
    if (type === 'instance') applyTags(tags, t); // other types (volume, network-interface…) are not modelled
  }
  const profileArn = p['IamInstanceProfile.Arn'];
  const httpTokens = p['MetadataOptions.HttpTokens'];
  const fingerprint = JSON.stringify(Object.entries(p).filter(([k]) => !['Action', 'Version', 'ClientToken'].includes(k)).sort());
  const spec: LaunchSpec = {
    imageId, instanceType: p.InstanceType ?? tpl?.instanceType ?? 'm1.small',
    subnetId: p.SubnetId ?? 'subnet-0a1b2c3d4e5f60718', vpcId: 'vpc-0a1b2c3d4e5f60718',
    securityGroupIds: list(p, 'SecurityGroupId'), keyName: p.KeyName,
    iamRole: p['IamInstanceProfile.Name'] ?? profileArn?.split('/').pop(), iamArn: profileArn,
    userData, spot: market === 'spot', shutdownBehavior: shutdown, tags, clientToken: p.ClientToken,
    launchTemplateId: tpl?.id, tagsInMetadata: p['MetadataOptions.InstanceMetadataTags'] === 'enabled',
    httpTokens: httpTokens === 'required' || httpTokens === 'optional' ? httpTokens : undefined,
  };
  return { spec, minCount, maxCount, fingerprint };
}

/** The instance filters this double understands; EC2 rejects unknown names. */
const FILTERS: Record<string, (i: Inst) => string[]> = {
  'instance-id': (i) => [i.id],
  'instance-state-name': (i) => [i.state],
  'instance-state-code': (i) => [String(STATE_CODES[i.state])],
  'instance-type': (i) => [i.instanceType],
  'image-id': (i) => [i.imageId],
  'subnet-id': (i) => [i.subnetId],
  'vpc-id': (i) => [i.vpcId],
  'private-ip-address': (i) => [i.privateIp],
  'ip-address': (i) => (i.publicIp ? [i.publicIp] : []),
  'key-name': (i) => (i.keyName ? [i.keyName] : []),
  'instance-lifecycle': (i) => (i.spot ? ['spot'] : []),
  'reservation-id': (i) => [i.reservationId],
  'client-token': (i) => (i.clientToken ? [i.clientToken] : []),
  'instance.group-id': (i) => i.securityGroupIds,
  'availability-zone': (i) => [i.az],
  'tag-key': (i) => Object.keys(i.tags),
  'tag-value': (i) => Object.values(i.tags),
};

/** EC2 filter values accept `*` and `?` wildcards. */
const glob = (pattern: string) => new RegExp('^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$', 's');

/** DescribeInstances: IDs, filters (AND across, OR within) and MaxResults/NextToken paging. */
export function describe(insts: Map<string, Inst>, p: Record<string, string>): { page: Inst[]; nextToken?: string } {
  const ids = list(p, 'InstanceId');
  lookup(insts, ids);
  const all = [...insts.values()];
  const tests = indices(p, 'Filter').map((n) => {
    const name = p[`Filter.${n}.Name`] ?? '';
    const res = list(p, `Filter.${n}.Value`).map(glob);
    const get = name.startsWith('tag:') ? (i: Inst) => (name.slice(4) in i.tags ? [i.tags[name.slice(4)]!] : []) : FILTERS[name];
    if (!get) throw bad(`The filter '${name}' is invalid`);
    return (i: Inst) => get(i).some((v) => res.some((re) => re.test(v)));
  });
  const matched = all.filter((i) => (ids.length === 0 || ids.includes(i.id)) && tests.every((t) => t(i)));
  if (p.MaxResults === undefined) return { page: matched };
  if (ids.length) throw bad('The parameter instancesSet cannot be used with the parameter maxResults', 'InvalidParameterCombination');
  const max = Number(p.MaxResults);
  if (!(max >= 5 && max <= 1000)) throw bad(`Value ( ${p.MaxResults} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.`);
  const start = p.NextToken ? Number(Buffer.from(p.NextToken, 'base64url').toString()) : 0;
  if (!Number.isInteger(start)) throw bad('Invalid NextToken', 'InvalidParameterValue');
  const end = start + max;
  return { page: matched.slice(start, end), nextToken: end < matched.length ? Buffer.from(String(end)).toString('base64url') : undefined };
}

const state = (s: InstanceStateName) => el('code', STATE_CODES[s]) + el('name', s);
const reasonText: Record<string, string> = {
  'Client.UserInitiatedShutdown': 'User initiated shutdown',
  'Client.InstanceInitiatedShutdown': 'Instance initiated shutdown',
  'Server.SpotInstanceTermination': 'Spot instance termination',
  'Server.InternalError': 'Internal error',
};

function instanceXml(i: Inst, owner: string): string {
  const when = `(${new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' GMT')})`;
  return [
    el('instanceId', i.id), el('imageId', i.imageId), `<instanceState>${state(i.state)}</instanceState>`,
    el('privateDnsName', `ip-${i.privateIp.replaceAll('.', '-')}.ec2.internal`), el('dnsName', ''),
    el('reason', i.reason?.startsWith('Client.UserInitiated') ? `User initiated ${when}` : ''), el('keyName', i.keyName),
    el('amiLaunchIndex', i.launchIndex), el('instanceType', i.instanceType), el('launchTime', i.launchTime.toISOString()),
    `<placement>${el('availabilityZone', i.az)}${el('tenancy', 'default')}</placement>`,
    `<monitoring>${el('state', 'disabled')}</monitoring>`, el('subnetId', i.subnetId), el('vpcId', i.vpcId),
    el('privateIpAddress', i.privateIp), el('ipAddress', i.publicIp), el('sourceDestCheck', true),
    items('groupSet', i.securityGroupIds.map((g) => el('groupId', g))),
    i.reason ? `<stateReason>${el('code', i.reason)}${el('message', `${i.reason}: ${reasonText[i.reason] ?? i.reason}`)}</stateReason>` : '',
    el('architecture', 'x86_64'), el('rootDeviceType', 'ebs'), el('rootDeviceName', '/dev/xvda'),
    el('virtualizationType', 'hvm'), el('clientToken', i.clientToken), el('hypervisor', 'xen'),
    items('tagSet', Object.entries(i.tags).map(([k, v]) => el('key', k) + el('value', v))),
    i.iamRole ? `<iamInstanceProfile>${el('arn', i.iamArn ?? `arn:aws:iam::${owner}:instance-profile/${i.iamRole}`)}${el('id', 'AIPA' + i.id.slice(2).toUpperCase())}</iamInstanceProfile>` : '',
    i.spot ? el('instanceLifecycle', 'spot') + el('spotInstanceRequestId', 'sir-' + i.id.slice(2, 10)) : '',
    el('ebsOptimized', false), el('enaSupport', true),
    `<metadataOptions>${el('state', 'applied')}${el('httpTokens', i.httpTokens ?? 'required')}${el('httpEndpoint', 'enabled')}${el('instanceMetadataTags', i.tagsInMetadata ? 'enabled' : 'disabled')}</metadataOptions>`,
  ].join('');
}

/** Body of a reservation: RunInstancesResponse's own children, or a reservationSet item. */
export function reservationXml(insts: Inst[], owner: string): string {
  return el('reservationId', insts[0]?.reservationId ?? '') + el('ownerId', owner) + items('groupSet', []) +
    items('instancesSet', insts.map((i) => instanceXml(i, owner)));
}

/** DescribeInstancesResponse body: instances grouped by reservation, in launch order. */
export function describeXml(r: { page: Inst[]; nextToken?: string }, owner: string): string {
  const groups = new Map<string, Inst[]>();
  for (const i of r.page) groups.set(i.reservationId, [...(groups.get(i.reservationId) ?? []), i]);
  return items('reservationSet', [...groups.values()].map((g) => reservationXml(g, owner))) + el('nextToken', r.nextToken);
}

/** TerminateInstancesResponse body. */
export function stateChangesXml(changes: { id: string; previous: InstanceStateName; current: InstanceStateName }[]): string {
  return items('instancesSet', changes.map((c) => el('instanceId', c.id) + `<currentState>${state(c.current)}</currentState><previousState>${state(c.previous)}</previousState>`));
}

/** GetConsoleOutputResponse body; `output` is absent until the instance has written anything, as on EC2. */
export function consoleXml(i: Inst): string {
  const out = Buffer.concat(i.console);
  return el('instanceId', i.id) + el('timestamp', (i.consoleAt ?? new Date()).toISOString()) + (out.length ? el('output', out.toString('base64')) : '');
}

export function envelope(action: string, requestId: string, body: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="${NS}">${el('requestId', requestId)}${body}</${action}Response>`;
}
export function errorXml(e: Ec2Error, requestId: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>${el('Code', e.code)}${el('Message', e.message)}</Error></Errors>${el('RequestID', requestId)}</Response>`;
}

/** A copy of an instance's record for callers outside the double. */
export function snapshot(i: Inst): DoubleInstance {
  const text = Buffer.concat(i.console).toString('utf8');
  return {
    instanceId: i.id, reservationId: i.reservationId, imageId: i.imageId, instanceType: i.instanceType,
    state: i.state, stateReason: i.reason, tags: { ...i.tags }, userData: i.userData.toString('utf8'),
    spot: i.spot, shutdownBehavior: i.shutdownBehavior, securityGroupIds: [...i.securityGroupIds],
    subnetId: i.subnetId, keyName: i.keyName, iamRole: i.iamRole, launchTemplateId: i.launchTemplateId,
    clientToken: i.clientToken, privateIpAddress: i.privateIp, launchTime: i.launchTime, pid: i.pid,
    exitCode: i.exitCode, exitSignal: i.exitSignal, console: text, imdsEndpoint: i.imds?.endpoint ?? '',
  };
}

/** The IMDS view of an instance, read live so tags and spot notices show at once. */
export function imdsView(i: Inst, accountId: string): ImdsView {
  return {
    instanceId: i.id, imageId: i.imageId, instanceType: i.instanceType, availabilityZone: i.az,
    region: i.az.replace(/[a-z]$/, ''), accountId, localIpv4: i.privateIp, publicIpv4: i.publicIp,
    userData: i.userData, pendingTime: i.launchTime, lifecycle: i.spot ? 'spot' : 'on-demand',
    iamRole: i.iamRole, tags: i.tags, tagsInMetadata: i.tagsInMetadata, spotInstanceAction: i.spotAction,
  };
}
