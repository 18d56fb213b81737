/**
 * The one registry of the `falconet` CLI's commands and flags. Everything a user reads about a flag
 * comes from here: the options handed to node:util parseArgs, `falconet CMD --help`, and
 * docs/cli.md (`npm run docs:cli` writes it; a test fails when it is out of date). A flag that is
 * not here cannot be parsed, so help and behaviour cannot drift apart.
 *
 * This module is data and pure functions only (no I/O at import), so the docs script and the tests
 * can load it without starting anything.
 */
import { readFileSync } from 'node:fs';
import type { ParseArgsConfig } from 'node:util';

export interface Flag {
  name: string;
  type: 'string' | 'boolean';
  /** May be given more than once (values collect in order). */
  multiple?: boolean;
  short?: string;
  /** The value's placeholder in usage lines: N, S, FILE, URL… */
  arg?: string;
  /** The default, as a user would type it (or a phrase: "the number of cores"). */
  default?: string;
  /** The value's unit: seconds, ms, bytes, tasks… */
  unit?: string;
  /** The environment variable read when the flag is absent. */
  env?: string;
  help: string;
}

export interface Command {
  name: string;
  /** One line: what the command does. */
  summary: string;
  /** What follows `falconet NAME` in the usage line, before the flags. */
  usage: string;
  /** A paragraph or two: how it behaves. */
  description: string;
  /** Flag groups, each printed under its title. */
  groups: Array<{ title: string; flags: Flag[] }>;
  /** Positional arguments: none, or at most / exactly this many (Infinity: any). */
  positionals: { min: number; max: number };
  examples: string[];
  /** Listed under "server" or "client" commands. */
  kind: 'server' | 'client';
}

export const EXIT_CODES: Array<[number, string]> = [
  [0, 'success: every task succeeded (or the command did what it was asked)'],
  [1, 'a task did not succeed (failed, timed out, cancelled, lost), or the dispatcher refused the request (NOT_FOUND, …)'],
  [2, 'usage or input: an unknown command or flag, a bad flag value, a bad task line'],
  [3, 'dispatcher unreachable or credential refused (UNREACHABLE, AUTH_FAILED, AUTH_WRONG_ROLE, TLS_FAILED, VERSION_MISMATCH, SESSION_FORBIDDEN, SESSION_BUSY, ADMIN_REQUIRED)'],
];
/** `run` mirrors its task instead: the task's exit code, 124 on timeout, 127 when it could not start, 130/143 on Ctrl-C/SIGTERM. */
export const RUN_EXIT_NOTE = '`run` exits with its task\'s own code instead: 124 when it timed out, 127 when it could not start, 128+N for a signal, 130/143 after Ctrl-C/SIGTERM; 2 and 3 as above.';

const HELP: Flag = { name: 'help', type: 'boolean', short: 'h', help: 'print this help and exit' };

export const CLIENT_FLAGS: Flag[] = [
  { name: 'dispatcher', type: 'string', arg: 'URL', default: 'ws://127.0.0.1:7878', env: 'FALCONET_URL', help: 'the dispatcher to talk to: ws://HOST:PORT, wss://HOST:PORT or HOST:PORT; several separated by commas are tried in turn (a DNS name: each of its addresses)' },
  { name: 'token', type: 'string', arg: 'T', env: 'FALCONET_TOKEN', help: 'the client credential, when the dispatcher has one (--client-token, or --admin-token to act on every session)' },
  { name: 'ca', type: 'string', arg: 'FILE', env: 'FALCONET_CA', help: 'PEM CA certificate(s) to trust for wss:// besides the system CAs' },
  { name: 'session-key', type: 'string', arg: 'K', env: 'FALCONET_SESSION_KEY', default: 'the key saved when this account opened the session', help: 'the key of the session a command names (a session opened elsewhere)' },
  { name: 'connect-timeout', type: 'string', arg: 'S', default: '30', unit: 'seconds', help: 'how long to keep dialing a dispatcher that does not answer' },
];

const JSON_FLAG: Flag = { name: 'json', type: 'boolean', help: 'print JSON instead of a table' };

export const DISPATCHER_FLAGS: Flag[] = [
  { name: 'host', type: 'string', arg: 'H', default: '127.0.0.1', help: 'the address to listen on (off loopback needs tokens, or --insecure)' },
  { name: 'port', type: 'string', arg: 'N', default: '7878', help: 'the port for ws://, http:// (/api/status, /metrics, the dashboard); 0 picks a free one' },
  { name: 'data-dir', type: 'string', arg: 'DIR', default: '~/.local/share/falconet', env: 'FALCONET_DATA_DIR', help: 'where the durable store (falconet.db) lives' },
  { name: 'store', type: 'string', arg: 'sqlite|memory|URL', default: 'sqlite', env: 'FALCONET_STORE_URL', help: 'sqlite survives a restart (in --data-dir); memory keeps nothing; postgres://user:password@host:port/db (or postgresql://) keeps the state in PostgreSQL, where several dispatchers can share it (the tables are created or migrated at start)' },
  { name: 'sync', type: 'string', arg: 'full|normal', default: 'full', help: 'full: a submit is acknowledged once fsynced; normal: once it survives a process crash' },
  { name: 'advertise', type: 'string', arg: 'URL', default: 'the URL it listens on', help: 'with a postgres:// store: the URL other dispatchers send clients to (MOVED) and list in /api/dispatchers' },
  { name: 'partition-lease-ms', type: 'string', arg: 'MS', default: '10000', unit: 'ms', help: 'with a postgres:// store: how long a dispatcher\'s partition leases last (a dead dispatcher\'s partitions move after this)' },
  { name: 'inbox-poll-ms', type: 'string', arg: 'MS', default: '100', unit: 'ms', help: 'with a postgres:// store: how often results that reached another dispatcher are fetched' },
  { name: 'retention', type: 'string', arg: 'S', default: '86400', unit: 'seconds', help: 'how long finished sessions and their results are kept' },
  { name: 'client-token', type: 'string', arg: 'T', env: 'FALCONET_CLIENT_TOKEN', help: 'the credential clients must present' },
  { name: 'client-token-file', type: 'string', arg: 'FILE', env: 'FALCONET_CLIENT_TOKEN_FILE', help: 'read the client token from a file' },
  { name: 'executor-token', type: 'string', arg: 'T', env: 'FALCONET_EXECUTOR_TOKEN', help: 'the credential executors must present' },
  { name: 'executor-token-file', type: 'string', arg: 'FILE', env: 'FALCONET_EXECUTOR_TOKEN_FILE', help: 'read the executor token from a file' },
  { name: 'admin-token', type: 'string', arg: 'T', env: 'FALCONET_ADMIN_TOKEN', help: 'the administrator credential (a client token that may act on every session); needs --client-token' },
  { name: 'admin-token-file', type: 'string', arg: 'FILE', env: 'FALCONET_ADMIN_TOKEN_FILE', help: 'read the admin token from a file' },
  { name: 'insecure', type: 'boolean', default: 'off', help: 'allow listening off loopback without both tokens' },
  { name: 'http-auth', type: 'boolean', default: 'off (on off loopback)', help: 'require the client token for /api/status and /metrics on loopback too' },
  { name: 'tls-cert', type: 'string', arg: 'FILE', env: 'FALCONET_TLS_CERT', help: 'PEM certificate: serve wss:// and https:// (reloaded on SIGHUP)' },
  { name: 'tls-key', type: 'string', arg: 'FILE', env: 'FALCONET_TLS_KEY', help: 'PEM private key for --tls-cert' },
  { name: 'tls-ca', type: 'string', arg: 'FILE', default: 'the --tls-cert file', env: 'FALCONET_TLS_CA', help: 'the CA the executors this dispatcher starts are told to trust' },
  { name: 'prefetch', type: 'string', arg: 'N|auto', default: 'auto', unit: 'tasks', help: 'tasks sent to an executor beyond its free slots: a fixed N (0: never wait behind a long task), or auto: each executor keeps a window sized from the run times it observes' },
  { name: 'heartbeat-ms', type: 'string', arg: 'MS', default: '2000', unit: 'ms', help: 'how often executors report' },
  { name: 'lease-ms', type: 'string', arg: 'MS', default: '15000', unit: 'ms', help: 'an executor silent this long is presumed dead and its tasks requeued (≥ 2 × --heartbeat-ms)' },
  { name: 'max-attempts', type: 'string', arg: 'N', default: '3', unit: 'attempts', help: 'attempts per task when the task does not say' },
  { name: 'max-requeues', type: 'string', arg: 'N', default: '20', unit: 'requeues', help: 'hand-backs (executor drained, lost) before a task is failed' },
  { name: 'data-policy', type: 'string', arg: 'max-cache-hit|first-available', default: 'max-cache-hit', help: 'where tasks with inputs go' },
  { name: 'cache-wait-ms', type: 'string', arg: 'MS', default: '2000', unit: 'ms', help: 'how long a task waits for the executor that caches its inputs' },
  { name: 'reserve-after', type: 'string', arg: 'S', default: '30', unit: 'seconds', help: 'a task with resource requests waiting this long gets an executor held for it' },
  { name: 'transport', type: 'string', arg: 'ws|uws', default: 'ws', help: 'the WebSocket server: ws, or µWebSockets.js (optional dependency)' },
  { name: 'max-frame-bytes', type: 'string', arg: 'B', default: '16777216', unit: 'bytes', help: 'the largest frame accepted' },
  { name: 'max-buffered-bytes', type: 'string', arg: 'B', default: '67108864', unit: 'bytes', help: 'a peer that lets this much pile up unread is dropped (slow consumer)' },
  { name: 'hello-timeout-ms', type: 'string', arg: 'MS', default: '10000', unit: 'ms', help: 'how long a connection may take to say hello' },
  { name: 'hello-max-bytes', type: 'string', arg: 'B', default: '65536', unit: 'bytes', help: 'the most a connection may send before its hello is done' },
  { name: 'max-pending-hellos', type: 'string', arg: 'N', default: '1024', unit: 'connections', help: 'connections without a hello yet, in total' },
  { name: 'max-pending-hellos-per-address', type: 'string', arg: 'N', default: '256', unit: 'connections', help: 'connections without a hello yet, per address' },
  { name: 'log-format', type: 'string', arg: 'pretty|json', default: 'pretty on a terminal, else json', env: 'FALCONET_LOG_FORMAT', help: 'how logs (on stderr) look' },
];

export const SCALING_FLAGS: Flag[] = [
  { name: 'min', type: 'string', arg: 'N', default: '0', unit: 'executors', help: 'the fewest executors kept' },
  { name: 'max', type: 'string', arg: 'N', default: 'max(1, --min)', unit: 'executors', help: 'the most executors started' },
  { name: 'policy', type: 'string', arg: 'one-at-a-time|additive|exponential|all-at-once', default: 'additive', help: 'how fast the fleet grows when tasks wait' },
  { name: 'idle-timeout', type: 'string', arg: 'S', default: '600', unit: 'seconds', help: 'an executor idle this long is drained' },
  { name: 'boot-timeout', type: 'string', arg: 'S', default: '600', unit: 'seconds', help: 'an instance that has not registered by then is terminated' },
  { name: 'cooldown', type: 'string', arg: 'S', default: '60 (at most --idle-timeout)', unit: 'seconds', help: 'the pause between scaling steps' },
  { name: 'poll-ms', type: 'string', arg: 'MS', default: '1000', unit: 'ms', help: 'how often the provisioner decides' },
  { name: 'executor-url', type: 'string', arg: 'URL', default: 'this dispatcher\'s URL', help: 'the URL started executors dial (a load balancer, a public name)' },
  { name: 'local-executor-types', type: 'string', arg: 'T:k=v,...;T2:...', help: 'local executor types started for resource requests no executor can run, e.g. \'small:cpus=1;fpga:cpus=2,fpga=1\' (local executors only)' },
];

export const EC2_FLAGS: Flag[] = [
  { name: 'provisioner', type: 'string', arg: 'local|ec2', help: 'start executors as needed: local processes, or EC2 instances' },
  { name: 'executor-slots', type: 'string', arg: 'N', default: '2', unit: 'slots', help: 'slots of each started executor' },
  { name: 'executor-labels', type: 'string', arg: 'k=v,...', help: 'labels of each started executor' },
  { name: 'cluster', type: 'string', arg: 'NAME', help: 'the name tagged on the EC2 instances of this dispatcher' },
  { name: 'ec2-image', type: 'string', arg: 'AMI', help: 'the AMI to launch (or --ec2-launch-template)' },
  { name: 'ec2-launch-template', type: 'string', arg: 'LT', help: 'the launch template to launch from' },
  { name: 'ec2-instance-type', type: 'string', arg: 'TYPE', help: 'the instance type, e.g. c7g.large' },
  { name: 'ec2-instance-types', type: 'string', arg: 'T:k=v,...;T2:...', help: 'instance types launched for resource requests no executor can run, with their resources, e.g. \'c7g.large:cpus=2,memoryMb=4096;g5.xlarge:cpus=4,memoryMb=16384,gpus=1\'' },
  { name: 'ec2-subnet', type: 'string', arg: 'SUBNET', help: 'the subnet to launch into' },
  { name: 'ec2-security-groups', type: 'string', arg: 'a,b', help: 'security group ids' },
  { name: 'ec2-instance-profile', type: 'string', arg: 'NAME', help: 'the IAM instance profile' },
  { name: 'ec2-key-name', type: 'string', arg: 'NAME', help: 'the SSH key pair' },
  { name: 'ec2-spot', type: 'boolean', default: 'off', help: 'launch spot instances' },
  { name: 'ec2-region', type: 'string', arg: 'REGION', default: 'the AWS SDK\'s', help: 'the AWS region' },
  { name: 'dispatcher-timeout', type: 'string', arg: 'S', default: '0 (never)', unit: 'seconds', help: 'started executors retire when their dispatcher is gone this long' },
];

const UP_FLAGS: Flag[] = [
  { name: 'executors', type: 'string', arg: 'N', default: '2', unit: 'executors', help: 'local executors to start (or --min/--max to scale)' },
  { name: 'slots', type: 'string', arg: 'N', default: 'cores ÷ executors', unit: 'slots', help: 'slots (concurrent tasks) of each executor' },
  { name: 'mode', type: 'string', arg: 'push|pull', default: 'push', help: 'how the executors get tasks' },
  { name: 'labels', type: 'string', arg: 'k=v,...', help: 'labels of each executor (tasks may require them)' },
];

const EXECUTOR_FLAGS: Flag[] = [
  { name: 'dispatcher', type: 'string', arg: 'URL', env: 'FALCONET_URL', help: 'the dispatcher to serve (ws:// or wss://); several separated by commas: the executor starts at a random one and moves to another when it is lost' },
  { name: 'token', type: 'string', arg: 'T', env: 'FALCONET_TOKEN', help: 'the executor credential (--executor-token)' },
  { name: 'slots', type: 'string', arg: 'N', default: 'the number of cores', unit: 'slots', env: 'FALCONET_SLOTS', help: 'tasks run at once' },
  { name: 'labels', type: 'string', arg: 'k=v,...', env: 'FALCONET_LABELS', help: 'labels tasks may require' },
  { name: 'resources', type: 'string', arg: 'name=n,...', default: 'detected cpus, memoryMb, gpus', env: 'FALCONET_RESOURCES', help: 'resources offered to tasks\' requests (adds custom ones, overrides detected ones)' },
  { name: 'mode', type: 'string', arg: 'push|pull', default: 'push', env: 'FALCONET_MODE', help: 'push: the dispatcher sends tasks; pull: the executor asks' },
  { name: 'dispatcher-order', type: 'string', arg: 'random|first', default: 'random', env: 'FALCONET_DISPATCHER_ORDER', help: 'with several dispatcher URLs: random spreads a fleet given one list; first tries them in the list\'s order (a preferred dispatcher, then the others)' },
  { name: 'id', type: 'string', arg: 'ID', default: 'hostname-pid', env: 'FALCONET_EXECUTOR_ID', help: 'the executor\'s id' },
  { name: 'idle-exit', type: 'string', arg: 'S', default: '0 (never)', unit: 'seconds', env: 'FALCONET_IDLE_EXIT', help: 'exit after this long without a task' },
  { name: 'dispatcher-timeout', type: 'string', arg: 'S', default: '0 (never)', unit: 'seconds', env: 'FALCONET_DISPATCHER_TIMEOUT', help: 'retire when the dispatcher is gone this long' },
  { name: 'retire-exit-code', type: 'string', arg: 'N', default: '0', env: 'FALCONET_RETIRE_EXIT_CODE', help: 'the exit code when retiring' },
  { name: 'shutdown-command', type: 'string', arg: 'CMD', env: 'FALCONET_SHUTDOWN_COMMAND', help: 'run on retiring (e.g. poweroff on EC2)' },
  { name: 'output-limit', type: 'string', arg: 'B', default: '65536', unit: 'bytes', env: 'FALCONET_OUTPUT_LIMIT', help: 'stdout and stderr kept per task, each (at most 1048576)' },
  { name: 'spawner', type: 'string', arg: 'helper|node', default: 'helper', env: 'FALCONET_SPAWNER', help: 'how tasks are started' },
  { name: 'config', type: 'string', arg: 'FILE', default: '/etc/falconet/executor.env', env: 'FALCONET_CONFIG', help: 'an env file of FALCONET_* settings' },
  { name: 'imds', type: 'boolean', default: 'off (on when no URL is given)', env: 'FALCONET_IMDS', help: 'read settings from EC2 user-data' },
  { name: 'ca', type: 'string', arg: 'FILE', env: 'FALCONET_CA', help: 'PEM CA certificate(s) to trust for wss:// besides the system CAs' },
  { name: 'session-key', type: 'string', arg: 'K', env: 'FALCONET_SESSION_KEY', default: 'the key saved when this account opened the session', help: 'the key of the session a command names (a session opened elsewhere)' },
  { name: 'lifetime', type: 'string', arg: 'S', default: 'none', unit: 'seconds', env: 'FALCONET_LIFETIME', help: 'this executor ends this long after it starts: no task with a longer timeoutMs starts on it' },
  { name: 'drain-margin', type: 'string', arg: 'S', default: '120', unit: 'seconds', env: 'FALCONET_DRAIN_MARGIN', help: 'take no new task once less than this is left of its life' },
  { name: 'spot-grace', type: 'string', arg: 'S', default: '0', unit: 'seconds', env: 'FALCONET_SPOT_GRACE', help: 'after an EC2 spot interruption notice, hand running tasks back this much later (at the latest at the notice\'s time)' },
  { name: 'notice-poll', type: 'string', arg: 'S', default: '5', unit: 'seconds', env: 'FALCONET_NOTICE_POLL', help: 'on EC2: how often to read spot interruption notices and scheduled events from IMDS' },
];

const PROGRESS_FLAGS: Flag[] = [
  { name: 'progress', type: 'boolean', default: 'on when stderr is a terminal', help: 'show progress on stderr (a redrawn bar on a terminal, a line every 5 s otherwise)' },
  { name: 'no-progress', type: 'boolean', help: 'never show progress' },
];

export const COMMANDS: Command[] = [
  {
    name: 'up',
    kind: 'server',
    summary: 'start a dispatcher and local executors in one process (the quick start)',
    usage: '[flags]',
    description: 'Starts a dispatcher and N local executors (or a local fleet that scales between --min and --max). Ctrl-C stops all of them. Every dispatcher flag applies.',
    groups: [
      { title: 'executors', flags: UP_FLAGS },
      { title: 'scaling (with --min/--max)', flags: SCALING_FLAGS },
      { title: 'dispatcher', flags: DISPATCHER_FLAGS },
    ],
    positionals: { min: 0, max: 0 },
    examples: ['falconet up', 'falconet up --port 7900 --data-dir /tmp/falconet-data --executors 4 --slots 2', 'falconet up --min 0 --max 4 --policy additive --idle-timeout 5'],
  },
  {
    name: 'dispatcher',
    kind: 'server',
    summary: 'start a dispatcher alone (executors connect to it)',
    usage: '[flags]',
    description: 'Listens for clients and executors on one port (ws:// or wss://, and HTTP for /api/status, /metrics and the dashboard at /). With --provisioner it starts executors itself.',
    groups: [
      { title: 'dispatcher', flags: DISPATCHER_FLAGS },
      { title: 'provisioning', flags: EC2_FLAGS },
      { title: 'scaling (with --provisioner)', flags: SCALING_FLAGS },
    ],
    positionals: { min: 0, max: 0 },
    examples: [
      'falconet dispatcher --port 7878 --data-dir /var/lib/falconet',
      'falconet dispatcher --host 0.0.0.0 --client-token-file c.tok --executor-token-file e.tok --tls-cert cert.pem --tls-key key.pem',
    ],
  },
  {
    name: 'executor',
    kind: 'server',
    summary: 'run tasks for a dispatcher',
    usage: '[flags]',
    description: 'Connects to a dispatcher and runs its tasks. Settings come from flags, then FALCONET_* variables, then the env file (--config), then EC2 user-data.',
    groups: [{ title: 'executor', flags: EXECUTOR_FLAGS }],
    positionals: { min: 0, max: 0 },
    examples: ['falconet executor --dispatcher ws://10.0.0.5:7878 --slots 8', 'FALCONET_URL=wss://d.example:7878 FALCONET_TOKEN=e1 falconet executor'],
  },
  {
    name: 'run',
    kind: 'client',
    summary: 'run one command as a task and mirror its output and exit code',
    usage: '[flags] -- CMD [ARGS...]',
    description: "Like `docker run`: prints the task's stdout and stderr and exits with its exit code. Ctrl-C or SIGTERM cancels the task. A relative --cwd is the executor's, not yours.",
    groups: [
      {
        title: 'task',
        flags: [
          { name: 'timeout', type: 'string', arg: 'S', default: 'none', unit: 'seconds', help: 'kill the task after this long (exit 124)' },
          { name: 'env', type: 'string', multiple: true, arg: 'K=V', help: 'set an environment variable for the task (repeatable)' },
          { name: 'cwd', type: 'string', arg: 'DIR', default: "the executor's", help: 'the working directory, on the executor' },
          { name: 'shell', type: 'boolean', default: 'off', help: 'run CMD through sh -c' },
          { name: 'input', type: 'string', multiple: true, arg: 'SRC=DST', help: 'stage SRC (a path or URL) to DST in the sandbox before it runs (repeatable)' },
          { name: 'output', type: 'string', multiple: true, arg: 'SRC=DST', help: 'copy the sandbox\'s SRC to DST after it ran (repeatable)' },
        ],
      },
      { title: 'client', flags: CLIENT_FLAGS },
    ],
    positionals: { min: 1, max: Infinity },
    examples: ['falconet run -- echo hello', "falconet run --timeout 60 --env MODE=fast -- sh -c 'make -j4'"],
  },
  {
    name: 'submit',
    kind: 'client',
    summary: 'submit tasks (one JSON object a line) and print each result as a JSON line',
    usage: '[--file F | F | -] [flags]  |  --array FROM-TO [flags] -- CMD ARGS...',
    description:
      'Reads tasks as JSON lines ({"cmd":["echo","hi"]}, {"builtin":"noop"}; docs/protocol.md has every field). ' +
      'A file is checked whole first: if any line is not JSON or not a valid task, nothing is submitted, each bad line is printed as F:LINE: message (the first 20) and the exit code is 2. ' +
      'From stdin, reading stops at the first bad line (tasks already submitted finish), unless --skip-invalid. ' +
      'Each printed result carries "line", the input line it came from; a task without an id gets one ending in its line number. ' +
      'With --array FROM-TO the command after -- is one job array: one task for each index, {} in its arguments (and {index} in a JSON task) replaced by the index, with ids ID[index]. ' +
      'One summary line ends on stderr: "9,999 succeeded, 1 failed (exit 4), in 7.6 s".',
    groups: [
      {
        title: 'submit',
        flags: [
          { name: 'file', type: 'string', arg: 'F', default: '-', help: 'the tasks, one JSON object a line; - (the default) reads stdin' },
          { name: 'session', type: 'string', arg: 'S', default: 'a new one', help: 'submit into this session (resumes it)' },
          { name: 'detach', type: 'boolean', default: 'off', help: 'print the session id once every task is accepted, and exit (falconet watch S gets the results)' },
          { name: 'print-ids', type: 'boolean', default: 'off', help: 'with --detach: print each task id, one a line in input order, instead of the session' },
          { name: 'skip-invalid', type: 'boolean', default: 'off', help: 'report bad lines and submit the others instead of stopping' },
          { name: 'array', type: 'string', arg: 'FROM-TO', default: 'none', help: 'submit the command after -- as a job array of FROM..TO (at most 1,000,000 elements); {} in it becomes the index' },
          { name: 'no-cache', type: 'boolean', default: 'off', help: 'tasks with a cacheKey run even if the key has a memoized result, and record theirs' },
          { name: 'lease', type: 'string', arg: 'S', default: 'none', unit: 'seconds', help: 'cancel the session\'s unfinished tasks when no client of it is connected this long' },
          { name: 'max-in-flight', type: 'string', arg: 'N', default: '20000 (50000 with --detach)', unit: 'tasks', help: 'tasks submitted but not yet finished (accepted, with --detach) at most' },
          ...PROGRESS_FLAGS,
        ],
      },
      { title: 'client', flags: CLIENT_FLAGS },
    ],
    positionals: { min: 0, max: Infinity },
    examples: [
      `printf '{"cmd":["echo","hi"]}\\n{"builtin":"noop"}\\n' > tasks.jsonl`,
      'falconet submit --file tasks.jsonl > results.jsonl',
      'S=$(falconet submit --detach --file tasks.jsonl) && falconet watch "$S"',
      `seq 100 | sed 's/.*/{"builtin":"noop"}/' | falconet submit -`,
      'falconet submit --array 1-10000 -- prog --part {} > results.jsonl',
    ],
  },
  {
    name: 'watch',
    kind: 'client',
    summary: "print a session's results not yet seen, until all its tasks are finished",
    usage: 'SESSION [flags]',
    description:
      'Attaches to a session (from submit --detach) and prints each result not yet acknowledged as a JSON line, then one summary line on stderr. ' +
      'Exits 0 when every task succeeded, 1 when one did not, and never 0 with results missing: if the connection ends by an error (the session taken over by another client, say), it says why and exits non-zero.',
    groups: [{ title: 'watch', flags: PROGRESS_FLAGS }, { title: 'client', flags: CLIENT_FLAGS }],
    positionals: { min: 1, max: 1 },
    examples: ['falconet watch 3f0c9a2e-… > results.jsonl'],
  },
  {
    name: 'status',
    kind: 'client',
    summary: 'the dispatcher at a glance: executors, slots, queue, rates, ETA',
    usage: '[executors|instances] [flags]',
    description:
      'Opens with a summary (executors by state, slots busy/total, the queue by state, tasks/s over the last 10 s, the queue\'s ETA), then tables. ' +
      'With many executors the table is summarised; `status executors` or -o wide lists each one. Terminated instances are counted, and only the last few listed.',
    groups: [
      {
        title: 'status',
        flags: [
          { name: 'output', short: 'o', type: 'string', arg: 'text|wide|json', default: 'text', help: 'wide: every executor and instance, with addresses; json: /api/status as is' },
          { ...JSON_FLAG, help: 'the same as -o json' },
          { name: 'watch', short: 'w', type: 'boolean', default: 'off', help: 'redraw every second in place (the same as falconet top); q or Ctrl-C quits' },
          { name: 'interval', type: 'string', arg: 'S', default: '1', unit: 'seconds', help: 'with --watch: seconds between redraws' },
        ],
      },
      { title: 'client', flags: CLIENT_FLAGS },
    ],
    positionals: { min: 0, max: 1 },
    examples: ['falconet status', 'falconet status executors', 'falconet status -o json | jq .tasks'],
  },
  {
    name: 'top',
    kind: 'client',
    summary: 'a live status, redrawn in place every second (status --watch)',
    usage: '[flags]',
    description: 'The status summary and tables, fitted to the terminal, redrawn every second until q or Ctrl-C. Readable with hundreds of executors: they are summarised by state, and only the busiest listed.',
    groups: [
      { title: 'top', flags: [{ name: 'interval', type: 'string', arg: 'S', default: '1', unit: 'seconds', help: 'seconds between redraws' }] },
      { title: 'client', flags: CLIENT_FLAGS },
    ],
    positionals: { min: 0, max: 0 },
    examples: ['falconet top', 'FALCONET_URL=ws://127.0.0.1:7900 falconet top --interval 2'],
  },
  {
    name: 'task',
    kind: 'client',
    summary: 'one task: state, attempt, executor, times, result and the tail of its output',
    usage: 'ID [flags]',
    description: 'Looks a task up in any session. An unknown id exits 1 with NOT_FOUND.',
    groups: [{ title: 'task', flags: [JSON_FLAG] }, { title: 'client', flags: CLIENT_FLAGS }],
    positionals: { min: 1, max: 1 },
    examples: ['falconet task t-3f0c9a2e41b2-17'],
  },
  {
    name: 'logs',
    kind: 'client',
    summary: "a task's stdout and stderr as it writes them (-f: follow to its end)",
    usage: 'ID [-f] [flags]',
    description:
      "Writes the task's stdout to stdout and its stderr to stderr, raw, in the order each was written; falconet's own notes (bytes dropped for a slow reader or beyond what the executor keeps, an attempt re-queued, a lost executor) go to stderr as [falconet: …] lines. Without -f: what there is now (the output kept so far: the first --output-limit bytes of each stream), then exit; a finished task prints the output its result keeps. With -f: waits for a queued task to start and follows it, and its next attempt if one is lost, until it ends. Exits 0 when the task succeeded (or, without -f, has not ended yet), 1 when it ended otherwise or the id is unknown (NOT_FOUND), 3 when the connection was lost.",
    groups: [
      {
        title: 'logs',
        flags: [
          { name: 'follow', type: 'boolean', short: 'f', default: 'off', help: 'keep printing what the task writes until it ends' },
          { name: 'session', type: 'string', arg: 'S', default: 'any', help: 'look the id up in this session only' },
        ],
      },
      { title: 'client', flags: CLIENT_FLAGS },
    ],
    positionals: { min: 1, max: 1 },
    examples: ['falconet logs job-17', 'falconet logs -f job-17 > out.txt 2> err.txt'],
  },
  {
    name: 'tasks',
    kind: 'client',
    summary: 'list tasks, newest first',
    usage: '[flags]',
    description: 'Lists tasks of one session or all, by state.',
    groups: [
      {
        title: 'tasks',
        flags: [
          { name: 'session', type: 'string', arg: 'S', default: 'all', help: 'only this session' },
          { name: 'state', type: 'string', arg: 'STATE', default: 'any', help: 'queued, running, succeeded, failed, timed_out, cancelled, lost, or finished (any end)' },
          { name: 'limit', type: 'string', arg: 'N', default: '1000', unit: 'tasks', help: 'list at most this many (≤ 10000)' },
          { ...JSON_FLAG, help: 'print JSON lines instead of a table' },
        ],
      },
      { title: 'client', flags: CLIENT_FLAGS },
    ],
    positionals: { min: 0, max: 0 },
    examples: ['falconet tasks --state running', 'falconet tasks --session S --state failed --json'],
  },
  {
    name: 'sessions',
    kind: 'client',
    summary: 'list the sessions the dispatcher holds',
    usage: '[flags]',
    description: 'One row a session: created, connected, submitted, finished, unfinished and unacknowledged results.',
    groups: [{ title: 'sessions', flags: [{ ...JSON_FLAG, help: 'print JSON lines instead of a table' }] }, { title: 'client', flags: CLIENT_FLAGS }],
    positionals: { min: 0, max: 0 },
    examples: ['falconet sessions'],
  },
  {
    name: 'cancel',
    kind: 'client',
    summary: 'cancel tasks by id, or every unfinished task of a session',
    usage: 'ID... [--session S] | --session S --all',
    description: 'Prints `cancelled N`; exits 1 with NOT_FOUND when nothing unfinished matched.',
    groups: [
      {
        title: 'cancel',
        flags: [
          { name: 'session', type: 'string', arg: 'S', default: 'any', help: 'only tasks of this session' },
          { name: 'all', type: 'boolean', default: 'off', help: 'with --session: every unfinished task of it' },
        ],
      },
      { title: 'client', flags: CLIENT_FLAGS },
    ],
    positionals: { min: 0, max: Infinity },
    examples: ['falconet cancel job-5 job-6', 'falconet cancel --session S --all'],
  },
  {
    name: 'drain',
    kind: 'client',
    summary: 'stop giving tasks to an executor; it leaves once its running tasks end',
    usage: 'EXECUTOR_ID [flags]',
    description: 'The executor finishes what it runs, then exits. Ids are in `falconet status executors`.',
    groups: [{ title: 'client', flags: CLIENT_FLAGS }],
    positionals: { min: 1, max: 1 },
    examples: ['falconet drain local-1458-2'],
  },
  {
    name: 'provisioner',
    kind: 'client',
    summary: 'provisioner reset: resume launches after the breaker opened',
    usage: 'reset [flags]',
    description: 'Three failed boots in a row open the provisioner\'s breaker and pause launches; `provisioner reset` closes it.',
    groups: [{ title: 'client', flags: CLIENT_FLAGS }],
    positionals: { min: 1, max: 1 },
    examples: ['falconet provisioner reset'],
  },
  {
    name: 'help',
    kind: 'client',
    summary: 'help on a command',
    usage: '[COMMAND]',
    description: 'The same as falconet COMMAND --help.',
    groups: [],
    positionals: { min: 0, max: 1 },
    examples: ['falconet help submit'],
  },
  {
    name: 'version',
    kind: 'client',
    summary: "print falconet's version (also --version)",
    usage: '',
    description: "Prints the package's version.",
    groups: [],
    positionals: { min: 0, max: 0 },
    examples: ['falconet --version'],
  },
];

export function command(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name);
}

/** Every flag of a command (the groups may share flags: the first wins), with --help. */
export function flagsOf(c: Command): Flag[] {
  const seen = new Map<string, Flag>();
  for (const g of c.groups) for (const f of g.flags) if (!seen.has(f.name)) seen.set(f.name, f);
  seen.set(HELP.name, HELP);
  return [...seen.values()];
}

/** The options node:util parseArgs takes for a command. */
export function parseOptions(c: Command): NonNullable<ParseArgsConfig['options']> {
  const out: NonNullable<ParseArgsConfig['options']> = {};
  for (const f of flagsOf(c)) out[f.name] = { type: f.type, ...(f.multiple ? { multiple: true } : {}), ...(f.short ? { short: f.short } : {}) };
  return out;
}

/** The package's version (package.json). */
export function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** Edit distance, for "did you mean". */
export function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1); // a transposition
    }
  return d[a.length][b.length];
}

/** The closest of `names` to `word`, when it is close enough to be a typo of it. */
export function closest(word: string, names: string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const n of names) {
    const dd = n.startsWith(word) && word.length >= 3 ? 0.5 : distance(word, n);
    if (dd < bestD) [best, bestD] = [n, dd];
  }
  return bestD <= Math.max(1, Math.min(3, Math.floor(word.length / 3))) ? best : undefined;
}

function flagLabel(f: Flag): string {
  return `${f.short ? `-${f.short}, ` : ''}--${f.name}${f.arg ? ` ${f.arg}` : ''}`;
}

function flagNotes(f: Flag): string {
  const notes: string[] = [];
  if (f.default !== undefined) notes.push(`default ${f.default}${f.unit && /^[0-9.]+$/.test(f.default) ? ` ${f.unit}` : ''}`);
  if (f.unit && !(f.default !== undefined && /^[0-9.]+$/.test(f.default))) notes.push(`in ${f.unit}`);
  if (f.env) notes.push(`env ${f.env}`);
  if (f.multiple) notes.push('repeatable');
  return notes.length ? ` (${notes.join('; ')})` : '';
}

function wrap(text: string, width: number, indent: string): string {
  const words = text.split(/\s+/).filter(Boolean);
  const lines: string[] = [];
  let line = '';
  for (const w of words) {
    if (line && line.length + 1 + w.length > width) {
      lines.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) lines.push(line);
  return lines.map((l) => indent + l).join('\n');
}

/** `falconet CMD --help`. */
export function helpText(c: Command): string {
  let out = `falconet ${c.name}: ${c.summary}\n\nusage: falconet ${c.name}${c.usage ? ` ${c.usage}` : ''}\n\n${wrap(c.description, 96, '')}\n`;
  c.groups.forEach((g, gi) => {
    out += `\n${g.title} flags:\n`;
    const flags = gi === c.groups.length - 1 ? [...g.flags, HELP] : g.flags;
    const labels = flags.map(flagLabel);
    const w = Math.min(34, Math.max(...labels.map((l) => l.length)));
    flags.forEach((f, i) => {
      const label = labels[i];
      const text = f.help + flagNotes(f);
      out += label.length > w ? `  ${label}\n${wrap(text, 96 - w - 4, ' '.repeat(w + 4))}\n` : `  ${label.padEnd(w)}  ${wrap(text, 96 - w - 4, ' '.repeat(w + 4)).trimStart()}\n`;
    });
  });
  if (c.groups.length === 0) out += `\n  -h, --help  ${HELP.help}\n`;
  if (c.examples.length) out += `\nexamples:\n${c.examples.map((e) => `  ${e}`).join('\n')}\n`;
  if (c.kind === 'client' && c.name !== 'help' && c.name !== 'version') {
    out += `\nexit codes: ${EXIT_CODES.map(([n, what]) => `${n} ${what.split(/[:(,]/)[0].trim()}`).join('; ')}${c.name === 'run' ? `\n${wrap(RUN_EXIT_NOTE.replace(/`/g, ''), 96, '  ').trimStart()}` : ''}\n`;
  }
  out += `\nfull reference: docs/cli.md\n`;
  return out;
}

/** `falconet --help`: every command, one line each. */
export function overviewText(): string {
  const line = (c: Command) => `  ${c.name.padEnd(12)} ${c.summary}\n`;
  return (
    `falconet ${version()}: a fast, lightweight task dispatcher\n\n` +
    `usage: falconet COMMAND [flags]   (falconet COMMAND --help: its flags, defaults and examples)\n\n` +
    `servers:\n${COMMANDS.filter((c) => c.kind === 'server').map(line).join('')}\n` +
    `clients:\n${COMMANDS.filter((c) => c.kind === 'client').map(line).join('')}\n` +
    `quick start:\n  falconet up --port 7900 --data-dir /tmp/falconet-data      # in one shell\n  export FALCONET_URL=ws://127.0.0.1:7900                    # in another\n  falconet run -- echo hello\n\n` +
    `exit codes:\n${EXIT_CODES.map(([n, w]) => `  ${n}  ${w}\n`).join('')}\n` +
    `full reference: docs/cli.md\n`
  );
}

const md = (s: string) => s.replace(/\|/g, '\\|');

/** docs/cli.md: written by `npm run docs:cli`, checked by test/cli-help.test.ts. */
export function markdown(): string {
  let out =
    '# The falconet CLI\n\n' +
    '<!-- Generated from client/registry.ts by `npm run docs:cli`; do not edit by hand (a test checks it is up to date). -->\n\n' +
    '`falconet COMMAND --help` (or `-h`, or `falconet help COMMAND`) prints the same text for one command. ' +
    'Usage errors go to stderr with exit code 2; a mistyped command or flag gets a "did you mean".\n\n' +
    '## Commands\n\n' +
    COMMANDS.map((c) => `- [\`${c.name}\`](#falconet-${c.name}): ${c.summary}`).join('\n') +
    '\n\n## Exit codes\n\n| code | meaning |\n|---|---|\n' +
    EXIT_CODES.map(([n, w]) => `| ${n} | ${md(w)} |`).join('\n') +
    `\n\n${RUN_EXIT_NOTE}\n\n` +
    'Every `submit` and `watch` ends with one summary line on stderr, e.g. `9,999 succeeded, 1 failed (exit 4), in 7.6 s`.\n';
  for (const c of COMMANDS) {
    out += `\n## falconet ${c.name}\n\n${c.summary[0].toUpperCase()}${c.summary.slice(1)}.\n\n\`\`\`\nfalconet ${c.name}${c.usage ? ` ${c.usage}` : ''}\n\`\`\`\n\n${c.description}\n`;
    for (const g of c.groups) {
      out += `\n**${g.title[0].toUpperCase()}${g.title.slice(1)} flags**\n\n| flag | default | unit | env | meaning |\n|---|---|---|---|---|\n`;
      for (const f of g.flags) {
        out += `| \`${md(flagLabel(f))}\`${f.multiple ? ' (repeatable)' : ''} | ${f.default !== undefined ? md(f.default) : ''} | ${f.unit ?? ''} | ${f.env ? `\`${f.env}\`` : ''} | ${md(f.help)} |\n`;
      }
    }
    if (c.examples.length) out += `\nExamples:\n\n\`\`\`sh\n${c.examples.join('\n')}\n\`\`\`\n`;
  }
  return out;
}

/** Every flag name the registry knows, for the README check. */
export function allFlagNames(): Set<string> {
  const names = new Set<string>();
  for (const c of COMMANDS) for (const f of flagsOf(c)) names.add(f.name);
  return names;
}
