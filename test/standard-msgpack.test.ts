/** The standard-msgpack check held against peers without the records capability. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Packr } from 'msgpackr';
import { assertStandardMsgpack } from '../protocol/index.js';

test('standard msgpack of every shape passes; records, other extensions and truncation are BAD_FRAME', { timeout: 5000 }, () => {
  const plain = new Packr({ useRecords: false, moreTypes: false });
  const values = [
    [{ t: 'hb', at: 1762518641152 }],
    [{ t: 'submit', ref: 1, tasks: [{ id: 'x'.repeat(300), cmd: ['a'.repeat(70_000)], env: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`K${i}`, 'v'])) }] }],
    [{ n: -1, m: -200, big: -(2 ** 40), f: 1.5, tiny: 0.1, arr: Array.from({ length: 70_000 }, (_, i) => i), bin: Buffer.alloc(300), nil: null, yes: true }],
  ];
  for (const v of values) assert.doesNotThrow(() => assertStandardMsgpack(plain.pack(v)));
  const records = new Packr({ useRecords: true }).pack([{ t: 'hb', at: 5 }, { t: 'hb', at: 6 }]);
  assert.throws(() => assertStandardMsgpack(records), (e: { code?: string; message: string }) => e.code === 'BAD_FRAME' && /records/.test(e.message));
  assert.throws(() => assertStandardMsgpack(Buffer.from([0x91, 0xd6, 0xff, 0, 0, 0, 0])), /extension type 0xd6/); // a timestamp
  assert.throws(() => assertStandardMsgpack(Buffer.from([0x92, 0x01])), /truncated/);
  assert.throws(() => assertStandardMsgpack(Buffer.from([0x91, 0xc1])), /extension type 0xc1|0xc1/);
});
