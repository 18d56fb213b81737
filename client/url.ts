/** What a user may type for "the dispatcher", and the WebSocket URL it means. */
import { ErrorCode, FalconetError } from '../protocol/index.js';

/** `host:port`, `[v6]:port`, optionally followed by a path: what people type without a scheme. */
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})(\/.*)?$/;

/**
 * Turns what a user gave as the dispatcher's address into a ws:// or wss:// URL: `host:port`
 * becomes `ws://host:port`; ws:// and wss:// URLs pass as they are. Anything else (http://, a bare
 * host, a typo) throws FalconetError USAGE, so that a wrong address fails at once and says why
 * instead of dialing something that can never answer.
 */
export function dispatcherUrl(input: string): string {
  const text = input.trim();
  const withScheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text) ? text : HOST_PORT.test(text) ? `ws://${text}` : null;
  if (withScheme === null) {
    throw new FalconetError(ErrorCode.USAGE, `${JSON.stringify(input)} is not a dispatcher address: give ws://HOST:PORT, wss://HOST:PORT or HOST:PORT`);
  }
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new FalconetError(ErrorCode.USAGE, `${JSON.stringify(input)} is not a valid URL: give ws://HOST:PORT, wss://HOST:PORT or HOST:PORT`);
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new FalconetError(ErrorCode.USAGE, `${JSON.stringify(input)}: a dispatcher is dialed over ws:// or wss://, not ${url.protocol}//`);
  }
  if (url.port !== '' && Number(url.port) > 65535) throw new FalconetError(ErrorCode.USAGE, `${JSON.stringify(input)}: port out of range`);
  return withScheme;
}

/** The dispatcher's HTTP base (for /api/status) at the same host and port as its WebSocket URL. */
export function httpBase(wsUrl: string): string {
  return wsUrl.replace(/^ws/, 'http').replace(/\/+$/, '');
}
