// Binary payloads through the client against a real herald, over each
// transport: the client publishes raw bytes (WebSocket: kind 0x01 frames;
// SSE and long-poll sessions: REST octet-stream) and its subscription gets
// them back byte for byte as Uint8Array (WebSocket: kind 0x02 frames; SSE
// and long-poll: base64 envelopes), in order with JSON messages, which stay
// as they were.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { HeraldClient } from '../../dist/index.js';
import { startHerald, waitFor } from '../lib/herald.mjs';

let herald;
const clients = [];
before(async () => {
  herald = await startHerald();
});
after(async () => {
  clients.forEach((c) => c.close());
  await herald?.kill();
});

/** Payloads every transport must carry exactly: edge bytes, invalid UTF-8, empty, random. */
function payloads() {
  const list = [
    new Uint8Array([]),
    new Uint8Array([0x00]),
    new Uint8Array([0xff]),
    new Uint8Array([0xc3, 0x28]),
    new Uint8Array([0x00, 0xff, 0x00, 0xfe, 0x80, 0x7f]),
    new TextEncoder().encode('{"looks":"like json"}'),
  ];
  for (const n of [1, 2, 3, 17, 255, 256, 1000, 4096, 60_000]) list.push(new Uint8Array(randomBytes(n)));
  return list;
}

for (const transport of ['ws', 'sse', 'poll']) {
  test(`${transport}: random binary payloads round-trip byte for byte; JSON stays JSON`, { timeout: 60_000 }, async () => {
    const client = new HeraldClient({
      url: herald.url,
      transports: [transport],
      WebSocket,
      reconnect: { minDelayMs: 50, maxDelayMs: 400 },
      openTimeoutMs: 2_000,
      upgradeIntervalMs: 0,
    });
    clients.push(client);
    const errors = [];
    client.on('error', (e) => errors.push(`${e.code} ${e.message}`));
    const got = [];
    const sub = client.subscribe(`bin.${transport}.>`, (m) => got.push(m));
    await sub.ready;
    const sent = payloads();
    const topic = `bin.${transport}.raw`;
    const acks = [];
    for (const [i, p] of sent.entries()) {
      acks.push(await client.publish(topic, p));
      if (i === 3) acks.push(await client.publish(topic, { json: true, i }));
    }
    assert.deepEqual(acks.map((a) => a.seq), acks.map((_, i) => i + 1));
    await waitFor(() => got.length === acks.length, { describe: () => `${got.length}/${acks.length} delivered; errors ${errors}` });
    const expected = [...sent.slice(0, 4), { json: true, i: 3 }, ...sent.slice(4)];
    for (const [i, m] of got.entries()) {
      assert.equal(m.seq, i + 1);
      assert.equal(m.topic, topic);
      if (expected[i] instanceof Uint8Array) {
        assert.ok(m.data instanceof Uint8Array, `seq ${m.seq}: a Uint8Array, got ${typeof m.data}`);
        assert.equal(Buffer.compare(Buffer.from(m.data), Buffer.from(expected[i])), 0, `seq ${m.seq}: bytes differ`);
      } else {
        assert.deepEqual(m.data, expected[i]);
      }
    }
    assert.deepEqual(errors, []);
  });
}

test('cross-transport: bytes published over WebSocket reach SSE and long-poll subscribers, and REST bytes reach WebSocket', { timeout: 60_000 }, async () => {
  const make = (transport) => {
    const c = new HeraldClient({ url: herald.url, transports: [transport], WebSocket, openTimeoutMs: 2_000, upgradeIntervalMs: 0 });
    clients.push(c);
    return c;
  };
  const ws = make('ws');
  const sse = make('sse');
  const poll = make('poll');
  const topic = 'bin.cross.t';
  const got = { ws: [], sse: [], poll: [] };
  const subs = [
    ws.subscribe(topic, (m) => got.ws.push(m.data)),
    sse.subscribe(topic, (m) => got.sse.push(m.data)),
    poll.subscribe(topic, (m) => got.poll.push(m.data)),
  ];
  await Promise.all(subs.map((s) => s.ready));
  const a = new Uint8Array(randomBytes(300));
  const b = new Uint8Array([0xc3, 0x28, 0x00, 0xff]);
  await ws.publish(topic, a);
  await poll.publish(topic, b);
  await waitFor(() => Object.values(got).every((l) => l.length === 2), { describe: () => JSON.stringify(Object.fromEntries(Object.entries(got).map(([k, v]) => [k, v.length]))) });
  for (const [name, list] of Object.entries(got)) {
    assert.deepEqual(list.map((d) => Buffer.from(d).toString('hex')), [Buffer.from(a).toString('hex'), Buffer.from(b).toString('hex')], name);
  }
});
