// Issue 25 against scripted nodes: every way a node says it cannot serve
// subscriptions now (a refused WebSocket upgrade with /readyz 503 and
// Retry-After, an `unavailable` error frame for a subscribe, a 200 SSE
// stream holding one `unavailable` event, a long-poll 503) sends the client
// to another node — not to another transport on that node — and the node
// is not asked again before its Retry-After. Subscriptions never fail over
// it and resume from their positions.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HeraldClient } from '../../dist/index.js';
import { fakeBroker } from '../lib/fake-broker.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(fn, label, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
    await sleep(5);
  }
}
const host = (url) => new URL(url.replace(/^ws/, 'http')).hostname;
const fast = { reconnect: { minDelayMs: 5, maxDelayMs: 20 }, openTimeoutMs: 500, upgradeIntervalMs: 0 };
const UNAVAILABLE = '{"error":{"code":"unavailable","message":"node not ready (not connected to NATS); retry, on another node if possible"}}';
const json = (status, body, headers = {}) =>
  new Response(body, { status, headers: { 'content-type': 'application/json', ...headers } });
const notReady = () => json(503, UNAVAILABLE, { 'retry-after': '1' });

/** A text/event-stream body that stays open after `text` (until aborted). */
function openStream(text, signal) {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode(text));
      signal?.addEventListener('abort', () => controller.error(new Error('aborted')));
    },
  });
}

test('a refused WebSocket upgrade of a node that is not ready: asked again only after its Retry-After, no fallback', async () => {
  let refusals = 2;
  const { FakeWS, sockets } = fakeBroker({
    behavior: () => (refusals > 0 ? 'refuse' : 'open'),
    onOp: (ws, op) => {
      if (op.op === 'subscribe') ws.push({ type: 'subscribed', id: op.id, topic: op.topic, cursor: op.cursor ?? '1~100' });
    },
  });
  const opened = [];
  const asked = [];
  const fetch = async (url) => {
    asked.push(new URL(url).pathname);
    if (url.endsWith('/readyz')) {
      if (refusals-- > 0) return notReady();
      return json(200, '{"status":"ready","node":"n1"}');
    }
    throw new Error(`unexpected ${url}`);
  };
  const Counting = class extends FakeWS {
    constructor(url) {
      opened.push(Date.now());
      super(url);
    }
  };
  const client = new HeraldClient({ url: 'http://a:1', WebSocket: Counting, fetch, ...fast });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  const sub = client.subscribe('o.*', () => {});
  await sub.ready;
  assert.equal(client.transport, 'ws');
  assert.deepEqual(asked, ['/readyz', '/readyz'], 'no other transport was tried');
  assert.equal(opened.length, 3);
  for (let i = 1; i < opened.length; i++) {
    assert.ok(opened[i] - opened[i - 1] >= 950, `asked again after ${opened[i] - opened[i - 1]} ms`);
  }
  assert.deepEqual(errors, []);
  assert.equal(sockets.at(-1).ops('subscribe').length, 1);
  client.close();
});

test('an `unavailable` error frame for a subscribe moves the subscriptions to another node with their positions', async () => {
  const { FakeWS, sockets } = fakeBroker({
    onOp: (ws, op) => {
      if (op.op !== 'subscribe') return;
      if (host(ws.url) === 'a') ws.push({ type: 'error', id: op.id, code: 'unavailable', message: 'node not ready' });
      else ws.push({ type: 'subscribed', id: op.id, topic: op.topic, cursor: op.cursor ?? '1~100' });
    },
  });
  const client = new HeraldClient({ url: ['http://a:1', 'http://b:1'], transports: ['ws'], WebSocket: FakeWS, ...fast });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  const got = [];
  const sub = client.subscribe('o.*', (m) => got.push(m.seq));
  await sub.ready;
  assert.equal(client.url, 'http://b:1');
  const onB = sockets.at(-1);
  onB.push({ type: 'message', topic: 'o.x', seq: 1, ts: 150, data: 1 });
  onB.push({ type: 'message', topic: 'o.x', seq: 2, ts: 160, data: 2 });
  // b drains (1012): to a, which refuses the subscribe, then b again — not
  // before b's Retry-After — resuming after seq 2.
  const drained = Date.now();
  onB.drop(1012);
  await until(() => client.connected && client.url === 'http://b:1' && sockets.at(-1) !== onB, 'back on b', 5000);
  assert.ok(Date.now() - drained >= 950, `b asked again after ${Date.now() - drained} ms`);
  const hosts = sockets.map((s) => host(s.url));
  assert.deepEqual(hosts, ['a', 'b', 'a', 'b']);
  assert.equal(sockets.at(-1).ops('subscribe')[0].cursor, '1~100~o.x~2');
  sockets.at(-1).push({ type: 'message', topic: 'o.x', seq: 2, ts: 160, data: 'dup' });
  sockets.at(-1).push({ type: 'message', topic: 'o.x', seq: 3, ts: 170, data: 3 });
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(sub.isClosed, false);
  assert.deepEqual(errors, []);
  client.close();
});

test('a 200 SSE stream holding an `unavailable` event: another node, not long-poll on that one', async () => {
  const asked = [];
  const fetch = async (url, init) => {
    const u = new URL(url);
    asked.push(`${u.hostname}${u.pathname}`);
    if (u.pathname === '/v1/poll') return json(200, '{"messages":[],"cursor":"1~100"}');
    if (u.pathname === '/v1/sse' && u.hostname === 'a') {
      return new Response(`retry: 1000\n\nevent: unavailable\ndata: ${UNAVAILABLE}\n\n`, {
        status: 200,
        headers: { 'content-type': 'text/event-stream', 'retry-after': '1' },
      });
    }
    if (u.pathname === '/v1/sse') {
      const body = openStream('retry: 1000\nid: 1~100\n\nevent: hello\ndata: {"client_id":"b-1","node":"b"}\n\n', init?.signal);
      return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } });
    }
    throw new Error(`unexpected ${url}`);
  };
  const client = new HeraldClient({ url: ['http://a:1', 'http://b:1'], transports: ['sse', 'poll'], fetch, ...fast });
  const seen = [];
  client.on('connect', (e) => seen.push(`${e.transport}@${e.url}`));
  const sub = client.subscribe('o.*', () => {});
  await sub.ready;
  assert.deepEqual(seen, ['sse@http://b:1']);
  assert.deepEqual(asked, ['a/v1/poll', 'a/v1/sse', 'b/v1/sse'], 'long-poll was not tried on a');
  client.close();
});

test('a long-poll answered 503 mid-stream: the next node from the same cursor', async () => {
  const asked = [];
  let aPolls = 0;
  const fetch = async (url) => {
    const u = new URL(url);
    asked.push({ at: Date.now(), host: u.hostname, cursor: u.searchParams.get('cursor') });
    if (u.pathname !== '/v1/poll') throw new Error(`unexpected ${url}`);
    if (u.hostname === 'a') {
      aPolls++;
      if (aPolls === 1) return json(200, '{"messages":[],"cursor":"1~100","client_id":"a-1"}');
      if (aPolls === 2) return json(200, '{"messages":[{"topic":"o.x","seq":1,"ts":150,"data":1}],"cursor":"1~150~o.x~1","client_id":"a-1"}');
      return notReady();
    }
    await sleep(20);
    return json(200, '{"messages":[],"cursor":"1~160~o.x~1","client_id":"b-1"}');
  };
  const client = new HeraldClient({ url: ['http://a:1', 'http://b:1'], transports: ['poll'], fetch, ...fast, pollTimeoutMs: 10 });
  const got = [];
  const errors = [];
  client.on('error', (e) => errors.push(e));
  const sub = client.subscribe('o.*', (m) => got.push(m.seq));
  await sub.ready;
  await until(() => client.url === 'http://b:1', 'moved to b');
  const firstOnB = asked.find((r) => r.host === 'b');
  assert.equal(firstOnB.cursor, '1~100~o.x~1', 'resumed from the position');
  await sleep(1100);
  const againOnA = asked.filter((r) => r.host === 'a').length;
  assert.equal(againOnA, 3, 'a was not asked again while b serves');
  assert.deepEqual(got, [1]);
  assert.equal(sub.isClosed, false);
  assert.deepEqual(errors, []);
  client.close();
});
