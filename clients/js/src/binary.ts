// Binary payloads (protocol-spec, binary WebSocket frames v1.1): the
// publish frame (kind 0x01) this client sends, the delivery frame (kind
// 0x02) it receives, and the base64 form JSON transports carry.

import { HeraldError } from './errors.js';

/** Kind byte of a client -> server binary publish frame. */
export const PUBLISH_KIND = 0x01;
/** Kind byte of a server -> client binary delivery frame. */
export const DELIVERY_KIND = 0x02;

/** A binary delivery, decoded from a kind 0x02 frame. */
export interface BinaryDelivery {
  topic: string;
  seq: number;
  ts: number;
  traceparent?: string;
  data: Uint8Array;
}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The bytes of a binary payload (`Uint8Array`, any other typed array or
 * `DataView`, or `ArrayBuffer`), or null when `data` is a JSON value.
 */
export function binaryPayload(data: unknown): Uint8Array | null {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/** One length-prefixed (u8) optional field of the publish header. */
function shortField(name: string, value: string): Uint8Array {
  const bytes = utf8.encode(value);
  if (bytes.length > 255) throw new HeraldError('bad_request', `${name} is longer than 255 bytes`);
  return bytes;
}

/** Encodes a binary publish frame (kind 0x01). */
export function encodePublish(
  topic: string,
  payload: Uint8Array,
  opts: { id?: string; idempotencyKey?: string; traceparent?: string } = {},
): Uint8Array {
  const topicBytes = utf8.encode(topic);
  if (topicBytes.length === 0 || topicBytes.length > 0xffff) throw new HeraldError('invalid_topic', 'bad topic length');
  const fields: Uint8Array[] = [];
  let flags = 0;
  if (opts.id !== undefined) {
    flags |= 1;
    fields.push(shortField('id', opts.id));
  }
  if (opts.idempotencyKey !== undefined) {
    flags |= 2;
    fields.push(shortField('idempotency key', opts.idempotencyKey));
  }
  if (opts.traceparent !== undefined) {
    flags |= 4;
    fields.push(shortField('traceparent', opts.traceparent));
  }
  const size = 4 + topicBytes.length + fields.reduce((n, f) => n + 1 + f.length, 0) + payload.length;
  const out = new Uint8Array(size);
  out[0] = PUBLISH_KIND;
  out[1] = flags;
  out[2] = topicBytes.length >> 8;
  out[3] = topicBytes.length & 0xff;
  out.set(topicBytes, 4);
  let at = 4 + topicBytes.length;
  for (const f of fields) {
    out[at++] = f.length;
    out.set(f, at);
    at += f.length;
  }
  out.set(payload, at);
  return out;
}

/** Decodes a binary delivery frame (kind 0x02); throws `bad_response` if it is not one. */
export function decodeDelivery(frame: Uint8Array): BinaryDelivery {
  const bad = (why: string) => new HeraldError('bad_response', `undecodable binary frame: ${why}`);
  if (frame.length < 20) throw bad(`${frame.length} bytes, shorter than the header`);
  if (frame[0] !== DELIVERY_KIND) throw bad(`kind 0x${frame[0]!.toString(16)}`);
  const flags = frame[1]!;
  if (flags & ~1) throw bad(`reserved flag bits 0x${flags.toString(16)}`);
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const seq = Number(view.getBigUint64(2));
  const ts = Number(view.getBigUint64(10));
  const topicLen = view.getUint16(18);
  let at = 20;
  if (frame.length < at + topicLen) throw bad('topic runs past the frame');
  let topic: string;
  try {
    topic = strictUtf8.decode(frame.subarray(at, at + topicLen));
  } catch {
    throw bad('topic is not UTF-8');
  }
  at += topicLen;
  let traceparent: string | undefined;
  if (flags & 1) {
    if (frame.length < at + 1) throw bad('traceparent length missing');
    const n = frame[at]!;
    at += 1;
    if (frame.length < at + n) throw bad('traceparent runs past the frame');
    traceparent = String.fromCharCode(...frame.subarray(at, at + n));
    at += n;
  }
  // A copy: the caller keeps it, the frame's buffer may be reused.
  const data = frame.slice(at);
  return traceparent === undefined ? { topic, seq, ts, data } : { topic, seq, ts, traceparent, data };
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const REVERSE = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) REVERSE[ALPHABET.charCodeAt(i)] = i;

/** Standard base64 with padding (what the node sends), without platform helpers. */
export function toBase64(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]! + ALPHABET[(n >> 6) & 63]! + ALPHABET[n & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i]! << 16;
    out += `${ALPHABET[n >> 18]!}${ALPHABET[(n >> 12) & 63]!}==`;
  } else if (rest === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += `${ALPHABET[n >> 18]!}${ALPHABET[(n >> 12) & 63]!}${ALPHABET[(n >> 6) & 63]!}=`;
  }
  return out;
}

/** Decodes standard base64 with padding; throws `bad_response` on anything else. */
export function fromBase64(text: string): Uint8Array {
  const bad = () => new HeraldError('bad_response', `invalid base64 payload: ${text.slice(0, 40)}`);
  if (text.length % 4 !== 0) throw bad();
  const pad = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  const out = new Uint8Array((text.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < text.length; i += 4) {
    let n = 0;
    for (let j = 0; j < 4; j++) {
      const c = text.charCodeAt(i + j);
      const last = i + 4 === text.length;
      if (c === 61 && last && j >= 4 - pad) {
        n <<= 6;
        continue;
      }
      const v = c < 128 ? REVERSE[c]! : -1;
      if (v < 0) throw bad();
      n = (n << 6) | v;
    }
    out[o++] = (n >> 16) & 0xff;
    if (o < out.length) out[o++] = (n >> 8) & 0xff;
    if (o < out.length) out[o++] = n & 0xff;
  }
  return out;
}

/**
 * A JSON envelope as delivered: one with `"encoding":"base64"` carries a
 * binary message, whose `data` becomes a `Uint8Array`; the field itself is
 * dropped. Any other `encoding` is undecodable for this client.
 */
export function decodeEnvelopeData<M extends { data: unknown; encoding?: unknown }>(m: M): M {
  if (m.encoding === undefined || m.encoding === null) return m;
  if (m.encoding !== 'base64' || typeof m.data !== 'string') {
    throw new HeraldError('bad_response', `unknown message encoding ${JSON.stringify(m.encoding)}`);
  }
  const { encoding: _drop, ...rest } = m;
  return { ...rest, data: fromBase64(m.data) } as M;
}
