/**
 * falconet's client SDK. Start with {@link connect}:
 *
 * ```ts
 * import { connect } from 'falconet';
 * const client = await connect('ws://127.0.0.1:7878', { token: process.env.FALCONET_TOKEN });
 * const r = await client.submit({ cmd: ['echo', 'hello'] });
 * console.log(r.status, r.stdout);
 * await client.close();
 * ```
 */
export { connect, Client, type ConnectOptions, type ConnectionState, type StateChange, type SubmitManyOptions, type Rejection, type LogEnd, type LogPiece, type LogStream } from './client.js';
export type { TaskHandle } from './handles.js';
export { dispatcherUrl, dispatcherUrls } from './url.js';
export { ErrorCode, FalconetError, PROTOCOL_VERSION, type TaskSpec, type TaskResult, type TaskStatus, type TaskState, type TaskInfo, type SessionInfo, type WireError } from '../protocol/index.js';
