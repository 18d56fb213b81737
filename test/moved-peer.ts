/** A test peer that speaks the real codec and redirects every hello with MOVED (failover tests). */
import { WebSocketServer, type WebSocket } from 'ws';
import { Codec, ErrorCode, RECORDS_CAP } from '../protocol/index.js';

export interface MovedPeer {
  url: string;
  /** Connections it was offered so far. */
  connections(): number;
  /** Called at each new connection. */
  onConnection(f: () => void): void;
  close(): Promise<void>;
}

/**
 * A peer that answers every hello with MOVED to `to()` and closes: what a dispatcher sharing a
 * store does when the session lives on another one. Counts the connections it was offered.
 */
export async function movedPeer(to: (self: string) => string): Promise<MovedPeer> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  const url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}`;
  const codec = new Codec();
  // As a dispatcher does: msgpackr records only for a peer that announced them (the Python client does not).
  const standard = new Codec({ records: false });
  let count = 0;
  const listeners: Array<() => void> = [];
  wss.on('connection', (ws: WebSocket) => {
    count++;
    for (const f of listeners) f();
    ws.on('message', (data: Buffer) => {
      const [hello] = codec.decode(data) as Array<{ t: string; caps?: string[] }>;
      if (hello?.t !== 'hello') return void ws.terminate();
      for (const frame of (hello.caps?.includes(RECORDS_CAP) ? codec : standard).encode([{ t: 'error', code: ErrorCode.MOVED, message: 'the session lives on another dispatcher', retryable: true, to: to(url) }])) ws.send(frame);
      ws.close(1008, ErrorCode.MOVED);
    });
  });
  return {
    url,
    connections: () => count,
    onConnection: (f) => void listeners.push(f),
    close: () => new Promise<void>((resolve) => {
      for (const c of wss.clients) c.terminate();
      wss.close(() => resolve());
    }),
  };
}

