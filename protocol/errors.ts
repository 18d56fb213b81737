/**
 * Stable error codes. Every error that crosses the wire is `{code, message, retryable}`; the code
 * is the contract (scripts and tests match on it), the message is for people. Codes are never
 * renamed or reused; docs/protocol.md lists them all.
 */
export const ErrorCode = {
  /** The frame could not be decoded as a msgpack array of messages. */
  BAD_FRAME: 'BAD_FRAME',
  /** The frame is larger than the negotiated maximum. */
  FRAME_TOO_LARGE: 'FRAME_TOO_LARGE',
  /** A message whose `t` is not known for this role and direction. */
  UNKNOWN_MESSAGE: 'UNKNOWN_MESSAGE',
  /** A known message with missing, mistyped or oversized fields. */
  INVALID_MESSAGE: 'INVALID_MESSAGE',
  /** The first message on a connection was not `hello`. */
  HELLO_REQUIRED: 'HELLO_REQUIRED',
  /** No `hello` arrived within the handshake timeout. */
  HELLO_TIMEOUT: 'HELLO_TIMEOUT',
  /** The peer speaks another protocol version. */
  VERSION_MISMATCH: 'VERSION_MISMATCH',
  /** The credential is missing or wrong. */
  AUTH_FAILED: 'AUTH_FAILED',
  /** The credential is valid, but for the other role (an executor token used to submit, say). */
  AUTH_WRONG_ROLE: 'AUTH_WRONG_ROLE',
  /** A submitted task failed validation; the other tasks of the batch were accepted. */
  TASK_INVALID: 'TASK_INVALID',
  /** The named task, session or executor does not exist. */
  NOT_FOUND: 'NOT_FOUND',
  /** An attempt's executor stopped answering (lease expired) and the task ran out of attempts. */
  TASK_EXECUTOR_LOST: 'TASK_EXECUTOR_LOST',
  /** The task exceeded its `timeoutMs`; its process group was killed. */
  TASK_TIMEOUT: 'TASK_TIMEOUT',
  /** The task was cancelled by a client. */
  TASK_CANCELLED: 'TASK_CANCELLED',
  /** The command could not be started (no such file, permission denied, bad cwd). */
  SPAWN_FAILED: 'SPAWN_FAILED',
  /**
   * The executor's spawn helper (the process that starts its commands) died while the task ran;
   * the task's process group was killed. Not the task's fault: it may be run again.
   */
  SPAWN_HELPER_LOST: 'SPAWN_HELPER_LOST',
  /** The command exited non-zero or was killed by a signal. */
  TASK_FAILED: 'TASK_FAILED',
  /**
   * The executor's report of an attempt could not be accepted (it broke the protocol's limits or
   * schema). The attempt ends `failed` with this code instead of waiting forever.
   */
  RESULT_INVALID: 'RESULT_INVALID',
  /**
   * The task went back to the queue without a crash (its executor reconnected without it, drained,
   * or stopped) more often than the dispatcher allows (`--max-requeues`): it ends `lost`.
   */
  TASK_REQUEUE_LIMIT: 'TASK_REQUEUE_LIMIT',
  /**
   * A submitted id already finished in this session and its result was delivered before (SDK), or
   * the id appears twice in one submit (that task is refused).
   */
  TASK_DUPLICATE: 'TASK_DUPLICATE',
  /**
   * Result error (status `cancelled`): a task named in `after` failed, was cancelled or was lost,
   * so this task will never run; the message names that dependency (dependants of dependants too).
   */
  DEPENDENCY_FAILED: 'DEPENDENCY_FAILED',
  /** Submit, per task: `after` names an id the session does not have (nor the same submit). */
  DEPENDENCY_UNKNOWN: 'DEPENDENCY_UNKNOWN',
  /** Submit, per task: `after` closes a cycle (the task is on one, or waits behind one). */
  DEPENDENCY_CYCLE: 'DEPENDENCY_CYCLE',
  /** An executor reported an attempt the dispatcher did not give it: refused, nothing changes. */
  ATTEMPT_NOT_YOURS: 'ATTEMPT_NOT_YOURS',
  /**
   * Another live connection holds this executor id (a different process): the newcomer is refused
   * and may try again once that connection is gone. Nobody can end a running executor by its id.
   */
  EXECUTOR_ID_IN_USE: 'EXECUTOR_ID_IN_USE',
  /** The client was closed: what it still waited for is rejected with this code. */
  CLIENT_CLOSED: 'CLIENT_CLOSED',
  /** The dispatcher's port is taken by another process. */
  ADDRESS_IN_USE: 'ADDRESS_IN_USE',
  /** The dispatcher is shutting down and takes no new work. */
  SHUTTING_DOWN: 'SHUTTING_DOWN',
  /**
   * The peer read too slowly: more than `--max-buffered-bytes` waited to be sent to it, so the
   * dispatcher dropped the connection. Nothing is lost: reconnect and resume (the SDK does).
   */
  SLOW_CONSUMER: 'SLOW_CONSUMER',
  /** The dispatcher could not make the change durable (store error, disk full). */
  STORE_FAILED: 'STORE_FAILED',
  /** The store is corrupted or truncated; the dispatcher refuses to start on it. */
  STORE_CORRUPT: 'STORE_CORRUPT',
  /** The store cannot be used: a data dir not writable or held by another dispatcher; a PostgreSQL server that refuses us or a newer schema. */
  STORE_UNAVAILABLE: 'STORE_UNAVAILABLE',
  /**
   * A commit was refused because this dispatcher no longer owns a partition it wrote to (another
   * dispatcher took it over: PostgreSQL store, several dispatchers). Nothing of it was written.
   */
  STORE_FENCED: 'STORE_FENCED',
  /** Reserved: the peer is sending faster than it is allowed to (nothing produces it yet). */
  RATE_LIMITED: 'RATE_LIMITED',
  /** Staging: an input object or file does not exist. */
  INPUT_NOT_FOUND: 'INPUT_NOT_FOUND',
  /** Staging: the executor may not read an input (S3 access denied, file permissions). */
  INPUT_ACCESS_DENIED: 'INPUT_ACCESS_DENIED',
  /** Staging: a download did not match its expected size or checksum; it is not used. */
  INPUT_CHECKSUM_MISMATCH: 'INPUT_CHECKSUM_MISMATCH',
  /** Staging: an input could not be fetched for another reason (network, server error). */
  INPUT_FAILED: 'INPUT_FAILED',
  /** Staging: a declared output file was not produced by the task. */
  OUTPUT_MISSING: 'OUTPUT_MISSING',
  /** Staging: an output could not be uploaded. */
  OUTPUT_FAILED: 'OUTPUT_FAILED',
  /** Staging: a `dst` or `src` path escapes the attempt's sandbox. */
  PATH_ESCAPE: 'PATH_ESCAPE',
  /** A task's named environment could not be set up; the message carries the log's tail. */
  ENVIRONMENT_FAILED: 'ENVIRONMENT_FAILED',
  /** The executor's cache cannot hold an input within its disk budget. */
  CACHE_FULL: 'CACHE_FULL',
  /** The executor's content cache could not be opened (its directory is unusable); the executor keeps serving. */
  CACHE_UNAVAILABLE: 'CACHE_UNAVAILABLE',
  /** The attempt's sandbox directory could not be created (disk full, read-only work dir). */
  SANDBOX_FAILED: 'SANDBOX_FAILED',
  /** The dispatcher could not be reached within the connect timeout. */
  UNREACHABLE: 'UNREACHABLE',
  /**
   * Connection-level, from a dispatcher that shares a store with others: what this connection
   * asks for (its session) lives on another dispatcher, named in the error's `to` (a ws:// or
   * wss:// URL). The dispatcher closes the connection; the SDK and executors dial `to` at once
   * (a few times in a row at most, then with backoff).
   */
  MOVED: 'MOVED',
  /** A bug on our side; the message says what. */
  INTERNAL: 'INTERNAL',
  /** A command line argument or config value is wrong (CLI and startup only). */
  USAGE: 'USAGE',
  /** Started on a non-loopback address without credentials and without `--insecure`. */
  INSECURE_CONFIG: 'INSECURE_CONFIG',
  /** The chosen `--transport` cannot be loaded here (uws: package or binary for this Node missing). */
  TRANSPORT_UNAVAILABLE: 'TRANSPORT_UNAVAILABLE',
  /**
   * SDK, CLI and executor: the TLS connection to the dispatcher failed in a way dialing again
   * cannot mend (its certificate does not verify against the trusted CAs, its name does not
   * match, it speaks no TLS at a wss:// URL). Fatal after the first attempt: no redial loop.
   */
  TLS_FAILED: 'TLS_FAILED',
  /**
   * Resuming, cancelling or reading a session another client opened needs its key (returned in
   * the welcome that opened it) or the administrator credential; this one had neither.
   */
  SESSION_FORBIDDEN: 'SESSION_FORBIDDEN',
  /**
   * Another live connection is reading this session: a session has one reader at a time, and
   * the newcomer is refused (it may retry: a holder silent for three heartbeats is taken to be
   * dead and replaced by the next one to ask). A live reader is never taken over.
   */
  SESSION_BUSY: 'SESSION_BUSY',
  /** The action spans sessions (cancel in every session): it needs the administrator credential. */
  ADMIN_REQUIRED: 'ADMIN_REQUIRED',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * The one source of retryability. For a connection-level error it means: reconnect (or wait) and
 * send the same thing again. For a result's error code it means: not the task's fault, so the
 * dispatcher runs the task again by itself while it has attempts left (`maxAttempts`); the code
 * reaches the client only once they are used up. docs/protocol.md's table says the same.
 */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCode.HELLO_TIMEOUT,
  ErrorCode.UNREACHABLE,
  ErrorCode.SHUTTING_DOWN,
  ErrorCode.SLOW_CONSUMER,
  ErrorCode.STORE_FAILED,
  ErrorCode.STORE_FENCED,
  ErrorCode.RATE_LIMITED,
  ErrorCode.TASK_EXECUTOR_LOST,
  ErrorCode.SPAWN_HELPER_LOST,
  ErrorCode.INTERNAL,
  ErrorCode.EXECUTOR_ID_IN_USE,
  ErrorCode.SESSION_BUSY,
  ErrorCode.MOVED,
]);

/** True when `code` is retryable (see RETRYABLE); unknown codes are not. */
export function isRetryable(code: string): boolean {
  return RETRYABLE.has(code as ErrorCode);
}

/** The wire form of an error, its retryability taken from the one table (`to`: where MOVED sends the peer). */
export function wireError(code: ErrorCode, message: string, to?: string): WireError {
  return { code, message, retryable: RETRYABLE.has(code), ...(to !== undefined ? { to } : {}) };
}

/** The wire form of an error. */
export interface WireError {
  code: ErrorCode;
  message: string;
  retryable: boolean;
  /** With MOVED: the dispatcher to dial instead (a ws:// or wss:// URL). */
  to?: string;
}

/** An error with a stable code; what every falconet API throws or rejects with. */
export class FalconetError extends Error {
  override readonly name = 'FalconetError';
  readonly retryable: boolean;
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown; retryable?: boolean },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.retryable = options?.retryable ?? RETRYABLE.has(code);
  }

  /** The `{code, message, retryable}` form sent on the wire. */
  toWire(): WireError {
    return { code: this.code, message: this.message, retryable: this.retryable };
  }

  /**
   * Rebuilds an error received from the wire. A code this version does not know (a newer peer)
   * is kept as sent: callers compare codes as strings, so nothing is lost by not narrowing it.
   */
  static fromWire(e: { code: string; message: string; retryable?: boolean }): FalconetError {
    return new FalconetError(e.code as ErrorCode, e.message, { retryable: e.retryable });
  }
}

/** True when `code` is one of ours. */
export function isErrorCode(code: string): code is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ErrorCode, code);
}
