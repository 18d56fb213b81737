/**
 * The group commit's release (dispatcher/outbound.ts): the turns that wait for one commit go to
 * each peer as one run of frames once it is durable, in order, and never before. Real SQLite
 * store (its writer thread decides when a commit ends); the peer is a socket that records the
 * frames it is given, decoded with the real codec.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { DispatcherCore, type Outbox } from '../dispatcher/core.js';
import { newSession } from '../dispatcher/model.js';
import { Outbound, type Conn } from '../dispatcher/outbound.js';
import { SqliteStore } from '../dispatcher/store.js';
import type { PeerSocket } from '../dispatcher/transport.js';
import { Codec } from '../protocol/index.js';

const quiet: Outbox = { toClient() {}, toExecutor() {}, resultReceived() {}, close() {} };
const OPTIONS = { heartbeatMs: 100, leaseMs: 1000, prefetch: 0, defaultMaxAttempts: 3, maxFrameBytes: 1 << 20, retentionMs: 60_000 };

test('the turns held by one commit reach a client in one frame, in order, after the commit', { timeout: 60_000 }, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'falconet-outbound-'));
  const store = SqliteStore.open({ dataDir, sync: 'normal' });
  try {
    await store.recover(new DispatcherCore(OPTIONS, quiet, { now: () => 1000 }, store));
    const codec = new Codec();
    const frames: unknown[][] = [];
    let allThere: () => void = () => {};
    const arrived = new Promise<void>((resolve) => (allThere = resolve));
    const socket: PeerSocket = {
      send(frame) {
        frames.push(codec.decode(frame));
        if (frames.flat().length === 3) allThere();
      },
      close() {},
      terminate() {},
      bufferedAmount: 0,
      remoteAddress: '127.0.0.1',
      limitPayload: () => true,
    };
    const conn: Conn = { id: 1, ws: socket, role: 'client', codec, out: [], acks: [], closing: null, helloTimer: null, admin: false, heardAt: 0 };
    const out = new Outbound(store, pino({ level: 'silent' }), 1 << 30, () => {}, (err) => assert.fail(err));
    const session = newSession('s1', 1000, null, null, null);

    // Three turns, each with a change to commit and a message that must wait for it. The first
    // turn's commit is in flight (on the writer thread) while the next two are made, so those
    // two wait for the same, second, commit.
    for (const seq of [1, 2, 3]) {
      session.acked = seq;
      store.sessionChanged(session);
      out.send(conn, { t: 'reply', ref: seq, ok: true });
      out.flush();
      if (seq === 1) assert.equal(frames.length, 0, 'nothing goes before its commit');
    }
    await arrived;
    const refs = frames.map((f) => f.map((m) => (m as { ref: number }).ref));
    assert.deepEqual(refs, [[1], [2, 3]], 'the second commit released its two turns as one frame, in order');
    await out.stop();
  } finally {
    await store.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
