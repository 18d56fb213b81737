/**
 * Every message a pure-core test exchanges goes through the real codec and the real validators,
 * as the adapter would pass it: one copy of that round trip for every such test.
 */
import {
  Codec,
  compileInbound,
  ClientMessageSchemas,
  DispatcherToClientSchemas,
  DispatcherToExecutorSchemas,
  ExecutorMessageSchemas,
  type ClientMessage,
  type DispatcherToClient,
  type DispatcherToExecutor,
  type ExecutorMessage,
} from '../protocol/index.js';

export const codec = new Codec();

/** Encodes, decodes and validates one message; throws with the validator's code when it fails. */
function wire<M>(schemas: Parameters<typeof compileInbound>[0]): (msg: unknown) => M {
  const validate = compileInbound<M>(schemas);
  return (msg) => {
    const [decoded] = codec.decode(codec.encode([msg])[0]);
    const v = validate(decoded);
    if (!v.ok) throw new Error(`${v.error.code}: ${v.error.message}`);
    return v.msg;
  };
}

export const toClient = wire<DispatcherToClient>(DispatcherToClientSchemas);
export const toExecutor = wire<DispatcherToExecutor>(DispatcherToExecutorSchemas);
export const fromClient = wire<ClientMessage>(ClientMessageSchemas);
export const fromExecutor = wire<ExecutorMessage>(ExecutorMessageSchemas);
