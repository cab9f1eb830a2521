// HeraldClient against a scripted in-process WebSocket (no server): the ops
// it sends on reconnect, duplicate filtering, publish retries with the same
// idempotency key, node rotation, offline behaviour.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HeraldClient } from '../../dist/index.js';
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

test('resubscribes from its position after a drop; replayed duplicates are dropped', async () => {
  const { FakeWS, sockets } = fakeBroker({
    onOp: (ws, op) => {
      if (op.op === 'subscribe') ws.push({ type: 'subscribed', id: op.id, topic: op.topic, cursor: op.cursor ?? '1~100' });
    },
  });
  const client = new HeraldClient({ url: 'http://h1:1', transports: ['ws'], WebSocket: FakeWS, ...fast });
  const got = [];
  const sub = client.subscribe('o.*', (m) => got.push(`${m.topic}#${m.seq}`));
  await sub.ready;
  const ws1 = sockets[0];
  assert.deepEqual(ws1.ops('subscribe').map((o) => [o.topic, o.cursor]), [['o.*', undefined]]);
  ws1.push({ type: 'message', topic: 'o.eu', seq: 99, ts: 99, data: 'before the floor' });
  ws1.push({ type: 'message', topic: 'o.eu', seq: 1, ts: 100, data: 1 });
  ws1.push({ type: 'message', topic: 'o.us', seq: 7, ts: 150, data: 1 });
  ws1.push({ type: 'message', topic: 'o.eu', seq: 2, ts: 160, data: 1 });
  assert.deepEqual(got, ['o.eu#1', 'o.us#7', 'o.eu#2']);
  const events = [];
  client.on('disconnect', (e) => events.push(`disconnect ${e.code}`));
  client.on('connect', (e) => events.push(`connect ${e.transport}`));
  ws1.drop(1006);
  await until(() => sockets.length === 2 && sockets[1].ops('subscribe').length === 1, 'resubscribe');
  const ws2 = sockets[1];
  assert.deepEqual(ws2.ops('subscribe')[0].cursor, '1~100~o.eu~2~o.us~7');
  ws2.push({ type: 'message', topic: 'o.eu', seq: 2, ts: 160, data: 'dup' });
  ws2.push({ type: 'message', topic: 'o.eu', seq: 3, ts: 170, data: 1 });
  ws2.push({ type: 'message', topic: 'o.new', seq: 1, ts: 120, data: 'new topic, after the floor' });
  assert.deepEqual(got, ['o.eu#1', 'o.us#7', 'o.eu#2', 'o.eu#3', 'o.new#1']);
  assert.deepEqual(events, ['disconnect 1006', 'connect ws']);
  assert.equal(sub.cursor(), '1~100~o.eu~3~o.new~1~o.us~7');
  client.close();
});

test('every subscription resumes from one combined cursor; seq-0 placeholders are not positions', async () => {
  const replies = {
    'a.>': '1~500~a.x~0',
    'a.b': '1~510~a.b~4',
  };
  const { FakeWS, sockets } = fakeBroker({
    onOp: (ws, op) => {
      if (op.op === 'subscribe') ws.push({ type: 'subscribed', id: op.id, topic: op.topic, cursor: op.cursor ?? replies[op.topic] });
    },
  });
  const client = new HeraldClient({ url: 'http://h1:1', transports: ['ws'], WebSocket: FakeWS, ...fast });
  const wild = client.subscribe('a.>', () => {});
  const exact = client.subscribe('a.b', () => {});
  await Promise.all([wild.ready, exact.ready]);
  assert.equal(wild.cursor(), '1~500');
  assert.equal(exact.cursor(), '1~510~a.b~4');
  sockets[0].push({ type: 'message', topic: 'a.b', seq: 5, ts: 600, data: 0 });
  sockets[0].drop();
  await until(() => sockets.length === 2 && sockets[1].ops('subscribe').length === 2, 'resubscribe');
  const ops = Object.fromEntries(sockets[1].ops('subscribe').map((o) => [o.topic, o.cursor]));
  assert.deepEqual(ops, { 'a.>': '1~500~a.b~5', 'a.b': '1~500~a.b~5' });
  client.close();
});

test('publish: retried with the same idempotency key after a lost connection', async () => {
  let acks = true;
  const { FakeWS, sockets } = fakeBroker({
    onOp: (ws, op) => {
      if (op.op === 'publish' && acks) ws.push({ type: 'ack', id: op.id, topic: op.topic, seq: 42 });
    },
  });
  const client = new HeraldClient({ url: 'http://h1:1', transports: ['ws'], WebSocket: FakeWS, ...fast });
  acks = false;
  const p = client.publish('o.eu', { n: 1 });
  await until(() => sockets[0]?.ops('publish').length === 1, 'first publish');
  const first = sockets[0].ops('publish')[0];
  assert.match(first.idempotency_key, /^hc-/);
  assert.deepEqual(first.data, { n: 1 });
  acks = true;
  sockets[0].drop();
  assert.deepEqual(await p, { topic: 'o.eu', seq: 42 });
  assert.equal(sockets[1].ops('publish')[0].idempotency_key, first.idempotency_key);
  // An 'unavailable' answer is retried too, with the same key.
  let refusals = 1;
  sockets[1].send = function (text) {
    const op = JSON.parse(text);
    this.sent.push(op);
    if (op.op !== 'publish') return;
    if (refusals-- > 0) this.push({ type: 'error', id: op.id, code: 'unavailable', message: 'no quorum' });
    else this.push({ type: 'ack', id: op.id, topic: op.topic, seq: 43 });
  };
  assert.deepEqual(await client.publish('o.eu', 2, { idempotencyKey: 'mine-1' }), { topic: 'o.eu', seq: 43 });
  assert.deepEqual(sockets[1].ops('publish').slice(-2).map((o) => o.idempotency_key), ['mine-1', 'mine-1']);
  // Other errors are final.
  sockets[1].send = function (text) {
    const op = JSON.parse(text);
    if (op.op === 'publish') this.push({ type: 'error', id: op.id, code: 'payload_too_large', message: 'too big' });
  };
  await assert.rejects(client.publish('o.eu', 3), (e) => e.code === 'payload_too_large');
  await assert.rejects(client.publish('o.*', 3), (e) => e.code === 'invalid_topic');
  client.close();
});

test('rotates to the next node when one cannot be reached, and right away on 1001', async () => {
  const { FakeWS, sockets } = fakeBroker({
    behavior: (url) => (url.includes('dead') ? 'refuse' : 'open'),
  });
  const client = new HeraldClient({
    url: ['http://dead:1', 'http://alive-1:1', 'http://alive-2:1'],
    transports: ['ws'],
    WebSocket: FakeWS,
    ...fast,
  });
  const seen = [];
  client.on('reconnecting', (e) => seen.push(`reconnecting ${e.url} ${e.delayMs <= 20}`));
  client.on('connect', (e) => seen.push(`connect ${e.url}`));
  await until(() => client.connected, 'connect');
  assert.deepEqual(seen, ['reconnecting http://alive-1:1 true', 'connect http://alive-1:1']);
  sockets.at(-1).drop(1001);
  await until(() => client.connected && client.url === 'http://alive-2:1', 'moved on');
  assert.deepEqual(seen.slice(2), ['reconnecting http://alive-2:1 true', 'connect http://alive-2:1']);
  client.close();
  assert.equal(client.state, 'closed');
});

test('bufferWhileOffline: false rejects publishes while disconnected; true queues them', async () => {
  const { FakeWS } = fakeBroker({ behavior: () => 'refuse' });
  const strict = new HeraldClient({ url: 'http://x:1', transports: ['ws'], WebSocket: FakeWS, bufferWhileOffline: false, ...fast });
  await assert.rejects(strict.publish('a', 1), (e) => e.code === 'offline');
  strict.close();
  const buffering = new HeraldClient({ url: 'http://x:1', transports: ['ws'], WebSocket: FakeWS, ...fast });
  const p = buffering.publish('a', 1);
  await sleep(30);
  buffering.close();
  await assert.rejects(p, (e) => e.code === 'closed');
});

test('since on a topic the connection already delivers: reconnects and resumes from one cursor', async () => {
  const { FakeWS, sockets } = fakeBroker({
    onOp: (ws, op) => {
      if (op.op === 'subscribe') ws.push({ type: 'subscribed', id: op.id, topic: op.topic, cursor: op.cursor ?? '1~700~t.a~9' });
    },
  });
  const client = new HeraldClient({ url: 'http://h:1', transports: ['ws'], WebSocket: FakeWS, ...fast });
  const first = client.subscribe('t.*', () => {});
  await first.ready;
  sockets[0].push({ type: 'message', topic: 't.a', seq: 10, ts: 800, data: 0 });
  const got = [];
  const second = client.subscribe('t.a', (m) => got.push(m.seq), { since: 3 });
  await second.ready;
  assert.equal(sockets.length, 2, 'a new connection');
  const ops = Object.fromEntries(sockets[1].ops('subscribe').map((o) => [o.topic, o.cursor]));
  assert.deepEqual(ops, { 't.*': '1~700~t.a~3', 't.a': '1~700~t.a~3' });
  for (let s = 4; s <= 11; s++) sockets[1].push({ type: 'message', topic: 't.a', seq: s, ts: 800, data: 0 });
  assert.deepEqual(got, [4, 5, 6, 7, 8, 9, 10, 11]);
  assert.equal(first.position('t.a'), 11);
  assert.throws(() => client.subscribe('t.*', () => {}, { since: 1 }), (e) => e.code === 'bad_request');
  assert.throws(() => client.subscribe('t..a', () => {}), (e) => e.code === 'invalid_topic');
  client.close();
});

test('falls back to SSE when the WebSocket constructor throws', async () => {
  const { FakeWS } = fakeBroker({ behavior: () => 'throw' });
  const calls = [];
  const fakeFetch = async (url) => {
    calls.push(url);
    if (url.endsWith('/healthz')) return new Response('{"status":"ok"}', { status: 200 });
    return new Response('{}', { status: 404 });
  };
  const client = new HeraldClient({ url: 'http://h:1', WebSocket: FakeWS, fetch: fakeFetch, upgradeIntervalMs: 0, ...fast });
  const connected = new Promise((r) => client.on('connect', r));
  const e = await connected;
  assert.equal(e.transport, 'sse');
  assert.deepEqual(calls, ['http://h:1/healthz']);
  client.close();
});

test('falls back when a WebSocket does not open in time, and on to long-poll when SSE fails too', async () => {
  const { FakeWS } = fakeBroker({ behavior: () => 'hang' });
  const calls = [];
  const fakeFetch = async (url) => {
    calls.push(url.replace('http://h:1', ''));
    if (url.includes('/v1/poll')) return new Response('{"messages":[],"cursor":"1~100~q.a~3"}', { status: 200 });
    // A proxy that does not pass SSE (a 503 would be the node's refusal).
    if (url.includes('/v1/sse')) return new Response('not here', { status: 404 });
    return new Response('{}', { status: 404 });
  };
  const client = new HeraldClient({ url: 'http://h:1', WebSocket: FakeWS, fetch: fakeFetch, upgradeIntervalMs: 0, ...fast, openTimeoutMs: 100, pollTimeoutMs: 50 });
  const sub = client.subscribe('q.a', () => {});
  const started = Date.now();
  const e = await new Promise((r) => client.on('connect', r));
  assert.equal(e.transport, 'poll');
  assert.ok(Date.now() - started >= 100, 'waited for the WebSocket open timeout');
  await sub.ready;
  assert.equal(sub.cursor(), '1~100~q.a~3');
  // After each failed transport the client asks the node whether it is up
  // and ready (it is: the transport is the problem).
  assert.deepEqual(calls.slice(0, 5), [
    '/readyz',
    '/v1/poll?topic=q.a&timeout_ms=0',
    '/v1/sse?topic=q.a&cursor=1~100~q.a~3',
    '/readyz',
    '/v1/poll?topic=q.a&cursor=1~100~q.a~3&timeout_ms=0',
  ]);
  client.close();
});

test('a node that comes back between a failed WebSocket attempt and the readiness probe keeps the WebSocket', async () => {
  // Socket 0 works, then drops; socket 1 is refused (the node is
  // restarting), and by the time the client asks /readyz the node is up.
  const { FakeWS, sockets } = fakeBroker({ behavior: (_url, n) => (n === 1 ? 'refuse' : 'open') });
  const calls = [];
  const fakeFetch = async (url) => {
    calls.push(url.replace('http://h:1', ''));
    if (url.endsWith('/readyz')) return new Response('{"status":"ready","node":"n1"}', { status: 200 });
    return new Response('{"error":{"code":"unavailable","message":"no"}}', { status: 503 });
  };
  const client = new HeraldClient({ url: 'http://h:1', WebSocket: FakeWS, fetch: fakeFetch, upgradeIntervalMs: 0, ...fast });
  const connects = [];
  client.on('connect', (e) => connects.push(e.transport));
  await until(() => client.connected, 'first connect');
  sockets[0].drop(1006);
  await until(() => connects.length === 2, 'second connect');
  assert.deepEqual(connects, ['ws', 'ws']);
  assert.equal(sockets.length, 3, 'the refused attempt was retried once on the WebSocket');
  assert.deepEqual(calls, ['/readyz'], 'no fallback transport was tried');
  client.close();
});

test('an undecodable frame fails the subscriptions with bad_response; no reconnect loop over it', async () => {
  const { FakeWS, sockets } = fakeBroker({
    onOp: (ws, op) => {
      if (op.op === 'subscribe') ws.push({ type: 'subscribed', id: op.id, topic: op.topic, cursor: '1~100' });
    },
  });
  const client = new HeraldClient({ url: 'http://h1:1', transports: ['ws'], WebSocket: FakeWS, ...fast });
  const errors = [];
  client.on('error', (e) => errors.push(e.code));
  const got = [];
  const sub = client.subscribe('u.x', (m) => got.push(m.seq));
  await sub.ready;
  sockets[0].push({ type: 'message', topic: 'u.x', seq: 1, ts: 101, data: 1 });
  sockets[0].onmessage?.({ data: '{"type":"message","topic":"u.x","seq":2,' });
  assert.deepEqual(got, [1]);
  assert.equal(sub.isClosed, true);
  assert.deepEqual(errors, ['bad_response']);
  // Nothing is left to resubscribe: the reconnect carries no subscribe op.
  await sleep(100);
  assert.equal(sockets.flatMap((s) => s.ops('subscribe')).length, 1);
  client.close();
});

test('an undecodable long-poll answer fails the subscription instead of polling again', async () => {
  let polls = 0;
  const fetch = async (url) => {
    polls++;
    const text = url.includes('timeout_ms=0')
      ? '{"messages":[],"cursor":"1~100"}'
      : '{"messages":[{"topic":"u.x","seq":1,"ts":101,"data":1}],"cursor":"1~100~u.x~1"'; // cut short
    return { status: 200, ok: true, headers: { get: () => 'application/json' }, text: async () => text };
  };
  const client = new HeraldClient({ url: 'http://h1:1', transports: ['poll'], fetch, ...fast, pollTimeoutMs: 10 });
  const errors = [];
  client.on('error', (e) => errors.push(e.code));
  const sub = client.subscribe('u.x', () => {});
  // `ready` may already reject with the error: the second poll follows at once.
  const outcome = await sub.ready.then(() => 'ready', (e) => e.code);
  assert.ok(['ready', 'bad_response'].includes(outcome), outcome);
  await until(() => sub.isClosed, 'subscription failed');
  assert.deepEqual(errors, ['bad_response']);
  const seen = polls;
  await sleep(100);
  assert.ok(polls <= seen + 1, `polled ${polls - seen} more times`);
  client.close();
});

test('publish over REST: a 408 (a node paused past its request timeout) is sent again with its key', async () => {
  const posts = [];
  const fetch = async (url, init = {}) => {
    const json = (status, text) => ({ status, ok: status === 200, headers: { get: () => 'application/json' }, text: async () => text });
    if (init.method === 'POST') {
      posts.push(init.headers['idempotency-key']);
      if (posts.length === 1) return { status: 408, ok: false, headers: { get: () => null }, text: async () => '' };
      return json(200, '{"topic":"p.x","seq":7,"ts":1}');
    }
    await sleep(5);
    return json(200, '{"messages":[],"cursor":"1~100"}');
  };
  const client = new HeraldClient({ url: 'http://h1:1', transports: ['poll'], fetch, ...fast, pollTimeoutMs: 10 });
  try {
    const sub = client.subscribe('p.x', () => {});
    await sub.ready;
    assert.deepEqual(await client.publish('p.x', { n: 1 }), { topic: 'p.x', seq: 7 });
    assert.equal(posts.length, 2);
    assert.equal(posts[0], posts[1], 'the same idempotency key both times');
  } finally {
    client.close();
  }
});
