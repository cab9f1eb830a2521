// The binary wire format (kind 0x01 publish, kind 0x02 delivery) and base64
// against hand-made byte vectors, and the client's use of them over a
// scripted WebSocket: binary publishes go out as kind 0x01 frames with the
// op id, binary deliveries and base64 envelopes surface as Uint8Array, and
// the admin signals (close 4004, an unasked `unsubscribed`) stop what they
// should.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HeraldClient, decodeDelivery, encodePublish, fromBase64, toBase64 } from '../../dist/index.js';
import { fakeBroker } from '../lib/fake-broker.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(fn, label, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
    await sleep(5);
  }
}
const fast = { reconnect: { minDelayMs: 5, maxDelayMs: 20 }, openTimeoutMs: 500 };
const bytes = (...b) => new Uint8Array(b);

test('publish frame: header, optional fields in order, raw payload', () => {
  assert.deepEqual(encodePublish('a.b', bytes(0x00, 0xff, 0xc3, 0x28)), bytes(0x01, 0x00, 0x00, 0x03, 0x61, 0x2e, 0x62, 0x00, 0xff, 0xc3, 0x28));
  assert.deepEqual(
    encodePublish('t', bytes(), { id: 'p1', idempotencyKey: 'k', traceparent: 'tp' }),
    bytes(0x01, 0x07, 0x00, 0x01, 0x74, 0x02, 0x70, 0x31, 0x01, 0x6b, 0x02, 0x74, 0x70),
  );
  assert.deepEqual(encodePublish('t', bytes(9), { idempotencyKey: 'kk' }), bytes(0x01, 0x02, 0x00, 0x01, 0x74, 0x02, 0x6b, 0x6b, 0x09));
  assert.throws(() => encodePublish('t', bytes(), { id: 'x'.repeat(256) }), /longer than 255/);
});

test('delivery frame: seq and ts as u64, topic, optional traceparent, payload', () => {
  const frame = bytes(
    0x02, 0x00,
    0, 0, 0, 0, 0, 0, 0x01, 0x02, // seq 258
    0, 0, 0x01, 0x9a, 0xd2, 0x3b, 0x1c, 0x7b, // ts
    0x00, 0x03, 0x61, 0x2e, 0x62, // "a.b"
    0x00, 0xff, 0xc3, 0x28,
  );
  assert.deepEqual(decodeDelivery(frame), { topic: 'a.b', seq: 258, ts: 0x019ad23b1c7b, data: bytes(0x00, 0xff, 0xc3, 0x28) });
  const traced = bytes(0x02, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0x00, 0x01, 0x74, 0x02, 0x74, 0x70);
  assert.deepEqual(decodeDelivery(traced), { topic: 't', seq: 1, ts: 2, traceparent: 'tp', data: bytes() });
  // A view into a larger buffer decodes the same.
  const big = new Uint8Array(frame.length + 5);
  big.set(frame, 5);
  assert.deepEqual(decodeDelivery(big.subarray(5)).data, bytes(0x00, 0xff, 0xc3, 0x28));
  assert.throws(() => decodeDelivery(frame.subarray(0, 19)), /shorter than the header/);
  assert.throws(() => decodeDelivery(bytes(0x01, ...frame.subarray(1))), /kind 0x1/);
  assert.throws(() => decodeDelivery(bytes(0x02, 0x02, ...frame.subarray(2))), /reserved flag/);
  assert.throws(() => decodeDelivery(frame.subarray(0, 22)), /topic runs past/);
});

test('base64: standard alphabet with padding, both ways; invalid input refused', () => {
  const cases = [
    [bytes(), ''],
    [bytes(0x00), 'AA=='],
    [bytes(0xff, 0xfe), '//4='],
    [bytes(0xc3, 0x28, 0x00), 'wygA'],
    [bytes(0xfb, 0xff, 0xbf, 0x00), '+/+/AA=='],
  ];
  for (const [raw, text] of cases) {
    assert.equal(toBase64(raw), text);
    assert.deepEqual(fromBase64(text), raw);
  }
  const random = new Uint8Array(1000).map(() => Math.floor(Math.random() * 256));
  assert.equal(toBase64(random), Buffer.from(random).toString('base64'));
  assert.deepEqual(fromBase64(Buffer.from(random).toString('base64')), random);
  for (const bad of ['A', 'AA=', 'A===', 'AA=A', '****', 'AAAA\n']) assert.throws(() => fromBase64(bad), /invalid base64/, bad);
});

test('client: binary publish is a kind 0x01 frame with the op id and key; acked like JSON', async () => {
  const { FakeWS, sockets } = fakeBroker({
    onBinary: (ws, frame) => {
      const idLen = frame[4 + frame[3]];
      const id = Buffer.from(frame.subarray(5 + frame[3], 5 + frame[3] + idLen)).toString();
      ws.push({ type: 'ack', id, topic: 'b.t', seq: 7 });
    },
  });
  const client = new HeraldClient({ url: 'http://h1:1', transports: ['ws'], WebSocket: FakeWS, ...fast });
  try {
    const ack = await client.publish('b.t', bytes(0x00, 0xff, 0xc3, 0x28), { idempotencyKey: 'key-1' });
    assert.deepEqual(ack, { topic: 'b.t', seq: 7 });
    const [frame] = sockets[0].binarySent;
    assert.deepEqual(frame.subarray(0, 7), bytes(0x01, 0x03, 0x00, 0x03, 0x62, 0x2e, 0x74));
    const idLen = frame[7];
    const keyAt = 8 + idLen;
    assert.equal(Buffer.from(frame.subarray(keyAt + 1, keyAt + 1 + frame[keyAt])).toString(), 'key-1');
    assert.deepEqual(frame.subarray(keyAt + 1 + frame[keyAt]), bytes(0x00, 0xff, 0xc3, 0x28));
    // An ArrayBuffer is accepted too; a JSON value stays a text publish.
    await client.publish('b.t', bytes(1, 2).buffer);
    assert.deepEqual(sockets[0].binarySent[1].subarray(-2), bytes(1, 2));
  } finally {
    client.close();
  }
});

test('client: binary delivery frames and base64 envelopes surface as Uint8Array; JSON unchanged', async () => {
  const { FakeWS, sockets } = fakeBroker({
    onOp: (ws, op) => {
      if (op.op === 'subscribe') ws.push({ type: 'subscribed', id: op.id, topic: op.topic, cursor: '1~100' });
    },
  });
  const client = new HeraldClient({ url: 'http://h1:1', transports: ['ws'], WebSocket: FakeWS, ...fast });
  try {
    const got = [];
    const sub = client.subscribe('b.*', (m) => got.push(m));
    await sub.ready;
    sockets[0].pushBinary(bytes(0x02, 0x00, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 200, 0x00, 0x03, 0x62, 0x2e, 0x74, 0xc3, 0x28));
    sockets[0].push({ type: 'message', topic: 'b.t', seq: 2, ts: 201, data: 'AP8=', encoding: 'base64' });
    sockets[0].push({ type: 'message', topic: 'b.t', seq: 3, ts: 202, data: 'AP8=' });
    assert.deepEqual(got.map((m) => [m.seq, m.data]), [[1, bytes(0xc3, 0x28)], [2, bytes(0x00, 0xff)], [3, 'AP8=']]);
    assert.ok(got[0].data instanceof Uint8Array);
  } finally {
    client.close();
  }
});

test('client: close 4004 stops the client, rejects publishes, reports kicked, never reconnects', async () => {
  const { FakeWS, sockets } = fakeBroker({
    onOp: (ws, op) => {
      if (op.op === 'subscribe') ws.push({ type: 'subscribed', id: op.id, topic: op.topic, cursor: '1~100' });
    },
  });
  const client = new HeraldClient({ url: ['http://h1:1', 'http://h2:1'], transports: ['ws'], WebSocket: FakeWS, ...fast });
  const kicked = [];
  client.on('kicked', (e) => kicked.push(e));
  const sub = client.subscribe('b.*', () => {});
  await sub.ready;
  sockets[0].drop(4004);
  await until(() => kicked.length === 1, 'kicked event');
  assert.equal(kicked[0].error.code, 'kicked');
  assert.equal(client.state, 'closed');
  assert.equal(sub.isClosed, true);
  assert.equal(sub.error.code, 'kicked');
  await assert.rejects(client.publish('b.t', 1), (e) => e.code === 'closed');
  await sleep(100);
  assert.equal(sockets.length, 1, 'no reconnect after a kick');
});

test('client: an unasked unsubscribed frame ends that subscription only, and it is not resubscribed', async () => {
  const { FakeWS, sockets } = fakeBroker({
    onOp: (ws, op) => {
      if (op.op === 'subscribe') ws.push({ type: 'subscribed', id: op.id, topic: op.topic, cursor: '1~100' });
    },
  });
  const client = new HeraldClient({ url: 'http://h1:1', transports: ['ws'], WebSocket: FakeWS, ...fast });
  try {
    const ended = [];
    client.on('unsubscribed', (e) => ended.push(e));
    const a = client.subscribe('a.*', () => {});
    const b = client.subscribe('b.*', () => {});
    await Promise.all([a.ready, b.ready]);
    sockets[0].push({ type: 'unsubscribed', topic: 'a.*' });
    assert.equal(ended.length, 1);
    assert.equal(ended[0].pattern, 'a.*');
    assert.deepEqual(ended[0].subscriptions, [a]);
    assert.equal(a.isClosed, true);
    assert.equal(a.error.code, 'unsubscribed');
    assert.equal(b.isClosed, false);
    sockets[0].drop(1006);
    await until(() => sockets.length === 2 && sockets[1].ops('subscribe').length > 0, 'resubscribe');
    await sleep(20);
    assert.deepEqual(sockets[1].ops('subscribe').map((o) => o.topic), ['b.*']);
  } finally {
    client.close();
  }
});
