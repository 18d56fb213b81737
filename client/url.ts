/**
 * What a user may type for "the dispatcher" (one address or a comma list of them), and the HTTP
 * base of each. The parsing lives in protocol/dispatchers.ts, shared with executors.
 */
export { dispatcherUrl, dispatcherUrls } from '../protocol/dispatchers.js';

/** The dispatcher's HTTP base (for /api/status) at the same host and port as its WebSocket URL. */
export function httpBase(wsUrl: string): string {
  return wsUrl.replace(/^ws/, 'http').replace(/\/+$/, '');
}
