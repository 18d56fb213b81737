/**
 * Checks that a frame is standard msgpack: no extension types (msgpackr records are one). A peer
 * that did not announce the `records` capability speaks standard msgpack, and the dispatcher holds
 * it to that (msgpackr's decoder would accept records from anyone). A walk over the bytes that
 * builds nothing: O(frame) with no allocation.
 */
import { ErrorCode, FalconetError } from './errors.js';

/** Bytes that follow a type byte, for the fixed-size types (0 for those with no payload). */
function fixedSize(b: number): number {
  if (b === 0xcc || b === 0xd0) return 1;
  if (b === 0xcd || b === 0xd1) return 2;
  if (b === 0xca || b === 0xce || b === 0xd2) return 4;
  if (b === 0xcb || b === 0xcf || b === 0xd3) return 8;
  return 0;
}

/** Throws FalconetError BAD_FRAME at the first extension type (or malformed byte) in `buf`. */
export function assertStandardMsgpack(buf: Uint8Array): void {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;
  let pending = 1; // values still to read
  const need = (n: number) => {
    if (pos + n > buf.length) throw new FalconetError(ErrorCode.BAD_FRAME, 'frame is not valid msgpack: truncated');
  };
  while (pending > 0) {
    need(1);
    const b = buf[pos++];
    pending--;
    if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) continue; // fixint, nil, bool
    if (b >= 0x80 && b <= 0x8f) pending += 2 * (b & 0x0f);
    else if (b >= 0x90 && b <= 0x9f) pending += b & 0x0f;
    else if (b >= 0xa0 && b <= 0xbf) pos += b & 0x1f;
    else if (b === 0xd9 || b === 0xc4) (need(1), (pos += 1 + buf[pos]));
    else if (b === 0xda || b === 0xc5) (need(2), (pos += 2 + view.getUint16(pos)));
    else if (b === 0xdb || b === 0xc6) (need(4), (pos += 4 + view.getUint32(pos)));
    else if (b === 0xdc) (need(2), (pending += view.getUint16(pos)), (pos += 2));
    else if (b === 0xdd) (need(4), (pending += view.getUint32(pos)), (pos += 4));
    else if (b === 0xde) (need(2), (pending += 2 * view.getUint16(pos)), (pos += 2));
    else if (b === 0xdf) (need(4), (pending += 2 * view.getUint32(pos)), (pos += 4));
    else if (fixedSize(b) > 0) pos += fixedSize(b);
    else {
      throw new FalconetError(
        ErrorCode.BAD_FRAME,
        `extension type 0x${b.toString(16)} at byte ${pos - 1}: this connection speaks standard msgpack (announce the "records" capability in hello to send msgpackr records)`,
      );
    }
  }
  need(0);
  if (pos > buf.length) throw new FalconetError(ErrorCode.BAD_FRAME, 'frame is not valid msgpack: truncated');
}

/** True when `buf` is standard msgpack (see assertStandardMsgpack). */
export function isStandardMsgpack(buf: Uint8Array): boolean {
  try {
    assertStandardMsgpack(buf);
    return true;
  } catch {
    return false;
  }
}
