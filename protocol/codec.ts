/**
 * The one codec: a frame is a msgpack array of messages. Batching many messages per WebSocket
 * frame is what lifts throughput from ~100k messages/s (one write each) to ~0.8M/s here.
 * msgpackr records (`useRecords`) send each object shape's keys once per frame, so a frame of
 * 1,000 tasks carries the field names once, not 1,000 times.
 *
 * Records are a msgpackr extension that other msgpack libraries cannot decode. A peer that
 * announces the `records` capability in its hello gets them; any other peer gets standard msgpack
 * (maps, no extension types), so a client in any language is a msgpack library away. This
 * decoder accepts both (a hello may come either way); the server holds a peer that did not
 * announce records to standard msgpack (standard.ts). 64-bit integers (what standard encoders
 * write for ms timestamps or byte counts) decode as numbers.
 */
import { Packr, Unpackr } from 'msgpackr';
import { ErrorCode, FalconetError } from './errors.js';

/** Default maximum frame: large enough for a batch of big results, small enough to bound memory. */
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;
/** Messages per frame before a new frame starts: bounds latency of the first message in a batch. */
export const MAX_MESSAGES_PER_FRAME = 4096;

export interface CodecOptions {
  /** Frames larger than this are refused on decode and split on encode. */
  maxFrameBytes?: number;
  /** Encode with msgpackr records (default true); false writes standard msgpack only. */
  records?: boolean;
}

/** The capability a peer announces in its hello to receive msgpackr records. */
export const RECORDS_CAP = 'records';

export class Codec {
  readonly maxFrameBytes: number;
  readonly records: boolean;
  // One instance per direction: msgpackr keeps per-instance state for records.
  readonly #packr: Packr;
  readonly #unpackr = new Unpackr({ useRecords: true, moreTypes: false, mapsAsObjects: true, int64AsType: 'number' });

  constructor(options: CodecOptions = {}) {
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.records = options.records ?? true;
    this.#packr = new Packr({ useRecords: this.records, moreTypes: false });
  }

  /**
   * Encodes messages into as few frames as fit the limits. A single message larger than the
   * frame limit is a bug on the sending side (outputs are bounded long before that) and throws.
   */
  encode(messages: readonly unknown[]): Buffer[] {
    const frames: Buffer[] = [];
    for (let i = 0; i < messages.length; i += MAX_MESSAGES_PER_FRAME) {
      const chunk = messages.length <= MAX_MESSAGES_PER_FRAME ? messages : messages.slice(i, i + MAX_MESSAGES_PER_FRAME);
      this.#encodeFitting(chunk, frames);
    }
    return frames;
  }

  #encodeFitting(messages: readonly unknown[], out: Buffer[]): void {
    // Packr reuses one buffer; copy so a frame handed to the socket is never overwritten.
    const packed = this.#packr.pack(messages as unknown[]);
    if (packed.length <= this.maxFrameBytes) {
      out.push(Buffer.from(packed));
      return;
    }
    if (messages.length === 1) {
      throw new FalconetError(ErrorCode.FRAME_TOO_LARGE, `one message of ${packed.length} bytes exceeds the ${this.maxFrameBytes}-byte frame limit`);
    }
    const half = messages.length >> 1;
    this.#encodeFitting(messages.slice(0, half), out);
    this.#encodeFitting(messages.slice(half), out);
  }

  /**
   * Decodes one frame into its messages (still unvalidated). Throws FalconetError with
   * FRAME_TOO_LARGE or BAD_FRAME; never anything else.
   */
  decode(frame: Buffer | ArrayBuffer | Buffer[]): unknown[] {
    const buf = Buffer.isBuffer(frame)
      ? frame
      : Array.isArray(frame)
        ? Buffer.concat(frame)
        : Buffer.from(frame);
    if (buf.length > this.maxFrameBytes) {
      throw new FalconetError(ErrorCode.FRAME_TOO_LARGE, `frame of ${buf.length} bytes exceeds the ${this.maxFrameBytes}-byte limit`);
    }
    let value: unknown;
    try {
      value = this.#unpackr.unpack(buf);
    } catch (err) {
      throw new FalconetError(ErrorCode.BAD_FRAME, `frame is not valid msgpack: ${(err as Error).message}`);
    }
    if (!Array.isArray(value)) {
      throw new FalconetError(ErrorCode.BAD_FRAME, 'a frame must be a msgpack array of messages');
    }
    return value;
  }
}
