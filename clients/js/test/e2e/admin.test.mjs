// The admin API's signals to the client, against a real herald, on each
// transport: a disconnect (WebSocket close 4004, SSE `kicked` event,
// long-poll 410) closes the client, which reports `kicked` and does not
// come back; a server-side unsubscribe ends only that subscription, which
// the client does not subscribe again.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { HeraldClient } from '../../dist/index.js';
import { sleep, startHerald, waitFor } from '../lib/herald.mjs';

let herald;
const clients = [];
before(async () => {
  herald = await startHerald();
});
after(async () => {
  clients.forEach((c) => c.close());
  await herald?.kill();
});

function makeClient(transport) {
  const client = new HeraldClient({
    url: herald.url,
    transports: [transport],
    WebSocket,
    reconnect: { minDelayMs: 50, maxDelayMs: 200 },
    openTimeoutMs: 2_000,
    upgradeIntervalMs: 0,
    pollTimeoutMs: 5_000,
  });
  clients.push(client);
  const log = { connects: 0, kicked: [], unsubscribed: [] };
  client.on('connect', () => log.connects++);
  client.on('kicked', (e) => log.kicked.push(e));
  client.on('unsubscribed', (e) => log.unsubscribed.push(e));
  return { client, log };
}

async function presenceIds(topic) {
  const res = await fetch(`${herald.url}/v1/topics/${topic}/presence`);
  assert.equal(res.status, 200);
  return (await res.json()).clients.map((c) => c.client_id);
}

async function admin(path, body) {
  const res = await fetch(`${herald.url}${path}`, {
    method: 'POST',
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return JSON.parse(text);
}

for (const transport of ['ws', 'sse', 'poll']) {
  test(`${transport}: disconnected by the admin API -> kicked, closed, no reconnect`, { timeout: 30_000 }, async () => {
    const { client, log } = makeClient(transport);
    const topic = `kick.${transport}`;
    const sub = client.subscribe(topic, () => {});
    await sub.ready;
    // A long-poll is present through the session of its waiting poll.
    const ids = await waitFor(async () => {
      const list = await presenceIds(topic);
      return list.length === 1 && list;
    });
    const answer = await admin(`/v1/clients/${encodeURIComponent(ids[0])}/disconnect`);
    assert.equal(answer.disconnected, 1, JSON.stringify(answer));
    await waitFor(() => log.kicked.length === 1, { describe: () => `state ${client.state}` });
    assert.equal(log.kicked[0].error.code, 'kicked');
    assert.equal(log.kicked[0].transport, transport);
    assert.equal(client.state, 'closed');
    assert.equal(sub.error?.code, 'kicked');
    await assert.rejects(client.publish(topic, 1), (e) => e.code === 'closed');
    // Stays gone: no new connection, nobody present.
    await sleep(1_500);
    assert.equal(log.connects, 1);
    assert.deepEqual(await presenceIds(topic), []);
  });

  test(`${transport}: a server-side unsubscribe ends that subscription only; it is not resubscribed`, { timeout: 30_000 }, async () => {
    const { client, log } = makeClient(transport);
    const [a, b] = [`unsub.${transport}.a`, `unsub.${transport}.b`];
    const got = [];
    const subA = client.subscribe(a, (m) => got.push(m.topic));
    const subB = client.subscribe(b, (m) => got.push(m.topic));
    await Promise.all([subA.ready, subB.ready]);
    const [id] = await waitFor(async () => {
      const list = await presenceIds(a);
      return list.length === 1 && list;
    });
    const answer = await admin(`/v1/clients/${encodeURIComponent(id)}/unsubscribe`, { topic: a });
    assert.equal(answer.unsubscribed, 1, JSON.stringify(answer));
    await waitFor(() => log.unsubscribed.length === 1);
    assert.equal(log.unsubscribed[0].pattern, a);
    assert.deepEqual(log.unsubscribed[0].subscriptions, [subA]);
    assert.equal(subA.isClosed, true);
    assert.equal(subA.error?.code, 'unsubscribed');
    assert.equal(subB.isClosed, false);
    await client.publish(a, 'after');
    await client.publish(b, 'after');
    await waitFor(() => got.includes(b));
    await sleep(300);
    assert.deepEqual(got, [b]);
    assert.equal(client.state, 'connected');
    await waitFor(async () => (await presenceIds(a)).length === 0, { describe: () => 'still present on the ended pattern' });
  });
}
