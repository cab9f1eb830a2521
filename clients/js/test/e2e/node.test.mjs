// The client in Node against a real herald: on each transport, herald is
// SIGKILLed and restarted (same port, same data dir) mid-stream while the
// client keeps publishing (buffered while the node is down); every
// subscription - a wildcard over two topics and a concrete one - must end
// with exactly seq 1..N per topic, and every publish acknowledged once.
// Also: a client that starts on SSE because WebSocket is unavailable
// upgrades back to WebSocket without a gap or a duplicate.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import WebSocket from 'ws';
import { HeraldClient } from '../../dist/index.js';
import { PACKAGE_ROOT, assertExactSequence, byTopic, sleep, startHerald, waitFor } from '../lib/herald.mjs';

const clients = [];
after(() => clients.forEach((c) => c.close()));

function makeClient(url, extra = {}) {
  const client = new HeraldClient({
    url,
    WebSocket,
    reconnect: { minDelayMs: 50, maxDelayMs: 400 },
    openTimeoutMs: 2_000,
    upgradeIntervalMs: 0,
    ...extra,
  });
  clients.push(client);
  const log = { events: [], errors: [] };
  client.on('connect', (e) => log.events.push(`connect:${e.transport}${e.upgraded ? ':upgraded' : ''}`));
  client.on('disconnect', (e) => log.events.push(`disconnect:${e.transport}`));
  client.on('reconnecting', () => log.events.push('reconnecting'));
  client.on('error', (e) => log.errors.push(`${e.code ?? ''} ${e.message}`));
  client.on('gap', (g) => log.errors.push(`gap ${JSON.stringify(g)}`));
  return { client, log };
}

function collect(client, pattern) {
  const msgs = [];
  const sub = client.subscribe(pattern, (m) => msgs.push({ topic: m.topic, seq: m.seq, data: m.data }));
  return { sub, msgs };
}

/** Fires `n` publishes alternating over `topics`, one every `gapMs`, without waiting for acks. */
async function publishStream(client, topics, n, gapMs, onIndex) {
  const acks = [];
  for (let i = 0; i < n; i++) {
    await onIndex?.(i);
    const topic = topics[i % topics.length];
    acks.push(client.publish(topic, { i }));
    await sleep(gapMs);
  }
  return Promise.all(acks);
}

function checkAll({ acks, wild, exact, topics, exactTopic, label }) {
  const acked = byTopic(acks);
  for (const t of topics) {
    const seqs = [...acked.get(t)].sort((a, b) => a - b);
    assertExactSequence(seqs, seqs.length, `${label}: acks of ${t} (each publish stored exactly once)`);
  }
  const got = byTopic(wild.msgs);
  for (const t of topics) assertExactSequence(got.get(t) ?? [], acked.get(t).length, `${label}: wildcard ${t}`);
  assertExactSequence(exact.msgs.map((m) => m.seq), acked.get(exactTopic).length, `${label}: concrete ${exactTopic}`);
  // Payloads arrive with their seq: message i of a topic carries the i of its publish.
  for (const m of wild.msgs) assert.equal(typeof m.data.i, 'number');
}

for (const transport of ['ws', 'sse', 'poll']) {
  test(`${transport}: herald SIGKILLed and restarted mid-stream -> exact sequence, no duplicate publish`, { timeout: 60_000 }, async () => {
    const herald = await startHerald();
    let current = herald;
    try {
      const { client, log } = makeClient(herald.url, { transports: [transport] });
      const topics = [`k.${transport}.a`, `k.${transport}.b.c`];
      const wild = collect(client, `k.${transport}.>`);
      const exact = collect(client, topics[0]);
      await Promise.all([wild.sub.ready, exact.sub.ready]);
      const N = 240;
      const acks = await publishStream(client, topics, N, 4, async (i) => {
        if (i === 80) {
          await current.kill();
          // Down for a moment: publishes meanwhile are buffered by the client.
          setTimeout(async () => {
            current = await herald.restart();
          }, 400);
        }
      });
      await waitFor(() => wild.msgs.length >= N && exact.msgs.length >= N / 2, {
        timeoutMs: 20_000,
        describe: () => `wild ${wild.msgs.length}/${N} exact ${exact.msgs.length}/${N / 2}; events ${log.events.join(' ')}; errors ${log.errors.join(' | ')}`,
      });
      await sleep(400);
      checkAll({ acks, wild, exact, topics, exactTopic: topics[0], label: transport });
      assert.deepEqual(log.errors, []);
      assert.ok(log.events.includes(`disconnect:${transport}`), log.events.join(' '));
      assert.equal(log.events.filter((e) => e.startsWith('connect:')).every((e) => e === `connect:${transport}`), true);
      assert.ok(log.events.filter((e) => e.startsWith('connect:')).length >= 2, log.events.join(' '));
      console.log(`[node] ${transport}: ${N} publishes, kill -9 + restart; events: ${log.events.join(' ')}`);
      client.close();
    } finally {
      await current.kill();
      await herald.kill();
    }
  });
}

test('WebSocket unavailable at first: SSE, then upgrade to WebSocket mid-stream -> exact sequence', { timeout: 60_000 }, async () => {
  const herald = await startHerald();
  try {
    let allowWs = false;
    class FlakyWebSocket extends WebSocket {
      constructor(url) {
        if (!allowWs) throw new Error('WebSocket blocked (test)');
        super(url);
      }
    }
    const { client, log } = makeClient(herald.url, { WebSocket: FlakyWebSocket, upgradeIntervalMs: 300 });
    const topics = ['u.one', 'u.two'];
    const wild = collect(client, 'u.*');
    const exact = collect(client, 'u.two');
    await Promise.all([wild.sub.ready, exact.sub.ready]);
    assert.equal(client.transport, 'sse');
    const N = 200;
    const acks = await publishStream(client, topics, N, 5, (i) => {
      if (i === 60) allowWs = true;
    });
    await waitFor(() => wild.msgs.length >= N && exact.msgs.length >= N / 2, {
      describe: () => `wild ${wild.msgs.length} exact ${exact.msgs.length}; ${log.events.join(' ')}`,
    });
    await sleep(300);
    checkAll({ acks, wild, exact, topics, exactTopic: 'u.two', label: 'upgrade' });
    assert.equal(client.transport, 'ws');
    assert.deepEqual(log.events.filter((e) => e.startsWith('connect:')), ['connect:sse', 'connect:ws:upgraded']);
    assert.deepEqual(log.errors, []);
    client.close();
  } finally {
    await herald.kill();
  }
});

// ------------------------------------------------------------------- auth

const SECRET = 'test-secret-0123456789abcdef';
function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64(claims);
  return `${head}.${body}.${createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url')}`;
}

test('auth: the token travels on every transport; refused topics reject the subscription / publish', { timeout: 60_000 }, async () => {
  const herald = await startHerald({ args: ['--jwt-secret', SECRET] });
  try {
    const token = jwt({ sub: 'u1', exp: Math.floor(Date.now() / 1000) + 600, subscribe: ['au.>'], publish: ['au.*'] });
    for (const transport of ['ws', 'sse', 'poll']) {
      const { client, log } = makeClient(herald.url, { transports: [transport], token });
      const mine = collect(client, `au.${transport}.>`);
      await mine.sub.ready;
      const refused = client.subscribe('other.>', () => {});
      await assert.rejects(refused.ready, (e) => e.code === 'forbidden');
      assert.equal(refused.isClosed, true);
      await assert.rejects(client.publish('other.x', 1), (e) => e.code === 'forbidden');
      // au.* may publish to au.<one token> only: publish to a topic under it we may read.
      const acks = [];
      for (let i = 0; i < 5; i++) acks.push(await client.publish(`au.${transport}`, i));
      const deep = await fetch(`${herald.url}/v1/topics/au.${transport}.x/messages`, {
        method: 'POST',
        headers: { authorization: `Bearer ${jwt({ sub: 'admin', exp: Math.floor(Date.now() / 1000) + 600, publish: ['>'] })}`, 'content-type': 'application/json' },
        body: '1',
      });
      assert.equal(deep.status, 200);
      await waitFor(() => mine.msgs.length >= 1, { describe: () => JSON.stringify(mine.msgs) });
      assert.deepEqual(mine.msgs.map((m) => `${m.topic}#${m.seq}`), [`au.${transport}.x#1`]);
      assert.deepEqual(acks.map((a) => a.seq), [1, 2, 3, 4, 5]);
      assert.equal(client.transport, transport);
      assert.ok(log.errors.every((e) => e.startsWith('forbidden')), log.errors.join(' | '));
      client.close();
    }
    // Without a token: refused (WebSocket handshake, then the HTTP transports: 401).
    const { client: anon } = makeClient(herald.url, { transports: ['ws', 'sse'] });
    anon.subscribe('au.>', () => {});
    const e = await new Promise((r) => anon.on('reconnecting', (ev) => r(ev.error)));
    assert.equal(e.code, 'unauthorized');
    anon.close();
  } finally {
    await herald.kill();
  }
});

test('auth: a WebSocket closed for an expired token (4003) reconnects with a fresh one and resumes exactly', { timeout: 60_000 }, async () => {
  const herald = await startHerald({ args: ['--jwt-secret', SECRET] });
  try {
    let issued = 0;
    const token = () => {
      issued++;
      // The first token expires in ~2 s; later ones last.
      const ttl = issued === 1 ? 2 : 600;
      return jwt({ sub: 'u2', exp: Math.floor(Date.now() / 1000) + ttl, subscribe: ['ex.>'], publish: ['ex.>'] });
    };
    const { client, log } = makeClient(herald.url, { transports: ['ws'], token });
    const closes = [];
    client.on('disconnect', (e) => closes.push(e.code));
    const wild = collect(client, 'ex.>');
    const exact = collect(client, 'ex.a');
    await Promise.all([wild.sub.ready, exact.sub.ready]);
    const topics = ['ex.a', 'ex.b'];
    const N = 300;
    const acks = await publishStream(client, topics, N, 12);
    await waitFor(() => wild.msgs.length >= N && exact.msgs.length >= N / 2, {
      describe: () => `wild ${wild.msgs.length} exact ${exact.msgs.length}; ${log.events.join(' ')} ${log.errors.join(' | ')}`,
    });
    await sleep(300);
    checkAll({ acks, wild, exact, topics, exactTopic: 'ex.a', label: 'token expiry' });
    assert.ok(closes.includes(4003), `closed with 4003 on expiry (closes: ${closes.join(',')})`);
    assert.ok(issued >= 2);
    assert.deepEqual(log.errors, []);
    client.close();
  } finally {
    await herald.kill();
  }
});

// ------------------------------------------------------------ README

test('README quick start works as written (examples/quickstart.mjs is the same code)', { timeout: 30_000 }, async () => {
  const readme = readFileSync(join(PACKAGE_ROOT, 'README.md'), 'utf8');
  const block = readme.match(/<!-- quickstart -->\s*```js\n([\s\S]*?)```/);
  assert.ok(block, 'README has a quick start block');
  const code = block[1];
  assert.ok(code.split('\n').filter((l) => l.trim()).length <= 10, 'quick start is at most 10 lines');
  assert.equal(readFileSync(join(PACKAGE_ROOT, 'examples/quickstart.mjs'), 'utf8'), code);
  const herald = await startHerald();
  const file = join(PACKAGE_ROOT, 'examples', `.quickstart-${process.pid}.tmp.mjs`);
  try {
    assert.ok(code.includes("'http://127.0.0.1:8080'"));
    writeFileSync(file, code.replace("'http://127.0.0.1:8080'", `'${herald.url}'`));
    const out = await new Promise((res, rej) =>
      execFile(process.execPath, [file], { timeout: 20_000 }, (err, stdout, stderr) =>
        err ? rej(new Error(`${err.message}\n${stdout}\n${stderr}`)) : res(stdout),
      ),
    );
    assert.match(out, /^connected over (ws|sse)$/m);
    assert.match(out, /^orders\.eu 1 \{ item: 'book' \}$/m);
    assert.match(out, /^published as seq 1$/m);
  } finally {
    rmSync(file, { force: true });
    await herald.kill();
  }
});

test('auth: setToken() refreshes a WebSocket connection before its token expires (no close)', { timeout: 30_000 }, async () => {
  const herald = await startHerald({ args: ['--jwt-secret', SECRET] });
  try {
    const claims = { sub: 'u3', subscribe: ['rf.>'], publish: ['rf.>'] };
    const { client, log } = makeClient(herald.url, {
      transports: ['ws'],
      token: jwt({ ...claims, exp: Math.floor(Date.now() / 1000) + 2 }),
    });
    const got = collect(client, 'rf.>');
    await got.sub.ready;
    client.setToken(jwt({ ...claims, exp: Math.floor(Date.now() / 1000) + 600 }));
    await sleep(3_200);
    await client.publish('rf.x', 1);
    await waitFor(() => got.msgs.length === 1);
    assert.deepEqual(log.events, ['connect:ws'], 'never disconnected');
    assert.deepEqual(log.errors, []);
    client.close();
  } finally {
    await herald.kill();
  }
});

// ------------------------------------------------------------ retention gaps

test('gap: messages trimmed by retention are reported once, then delivery continues exactly (every transport)', { timeout: 60_000 }, async () => {
  const dir = (await import('node:fs')).mkdtempSync(join((await import('node:os')).tmpdir(), 'herald-js-gap-'));
  const config = join(dir, 'herald.toml');
  writeFileSync(config, '[log]\nretention_interval = "100ms"\n[namespaces.gp.retention]\nmax_messages = 5\n');
  const herald = await startHerald({ args: ['--config', config] });
  try {
    for (const transport of ['ws', 'sse', 'poll']) {
      const topic = `gp.${transport}`;
      for (let i = 1; i <= 20; i++) {
        const res = await fetch(`${herald.url}/v1/topics/${topic}/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: String(i) });
        assert.equal(res.status, 200);
      }
      // Wait until retention has trimmed the topic to its last 5 messages.
      await waitFor(async () => (await (await fetch(`${herald.url}/v1/topics/${topic}/messages?since=0`)).json()).first_seq === 16, {
        describe: async () => JSON.stringify(await (await fetch(`${herald.url}/v1/topics/${topic}/messages?since=0`)).json()),
      });
      const { client } = makeClient(herald.url, { transports: [transport] });
      const gaps = [];
      client.on('gap', (g) => gaps.push(`${g.topic} ${g.from}-${g.to} (${g.subscriptions.length})`));
      // A live subscription and one from seq 0, to the same topic.
      const live = collect(client, topic);
      const fromStart = [];
      const sub = client.subscribe(topic, (m) => fromStart.push(m.seq), { since: 0 });
      await Promise.all([live.sub.ready, sub.ready]);
      await client.publish(topic, 21);
      await waitFor(() => fromStart.length >= 6 && live.msgs.length >= 1, { describe: () => JSON.stringify({ live: live.msgs, fromStart, gaps }) });
      await sleep(200);
      assert.deepEqual(live.msgs.map((m) => m.seq), [21], `${transport}: the live subscription starts live`);
      assert.deepEqual(fromStart, [16, 17, 18, 19, 20, 21], `${transport}: the one from 0 gets what is retained`);
      assert.deepEqual(gaps, [`${topic} 1-15 (1)`], `${transport}: one gap, for the subscription from 0`);
      assert.equal(sub.position(topic), 21);
      client.close();
    }
  } finally {
    await herald.kill();
  }
});

// ------------------------------------------------- a second subscription joins

test('a second live subscription to the same pattern, mid-stream: contiguous from its start, no duplicate (every transport)', { timeout: 60_000 }, async () => {
  const herald = await startHerald();
  try {
    for (const transport of ['ws', 'sse', 'poll']) {
      const { client, log } = makeClient(herald.url, { transports: [transport] });
      const topics = [`jn${transport}.a`, `jn${transport}.b`];
      const first = collect(client, `jn${transport}.*`);
      await first.sub.ready;
      let second;
      const N = 200;
      const acks = await publishStream(client, topics, N, 3, async (i) => {
        // Publishing waits for the second subscription to be live, so it
        // starts mid-stream however slow the machine is.
        if (i === 80) {
          second = collect(client, `jn${transport}.*`);
          await second.sub.ready;
        }
      });
      await waitFor(() => first.msgs.length >= N, { describe: () => `${first.msgs.length}` });
      await sleep(300);
      const acked = byTopic(acks);
      const a = byTopic(first.msgs);
      const b = byTopic(second.msgs);
      for (const t of topics) {
        assertExactSequence(a.get(t) ?? [], acked.get(t).length, `${transport}: first ${t}`);
        const seqs = b.get(t) ?? [];
        const n = acked.get(t).length;
        assert.ok(seqs.length > 0 && seqs.length < n, `${transport}: second ${t} got ${seqs.length} of ${n}`);
        const from = seqs[0];
        assert.deepEqual(seqs, Array.from({ length: n - from + 1 }, (_, k) => from + k), `${transport}: second ${t} contiguous to the end`);
      }
      assert.deepEqual(log.errors, []);
      client.close();
    }
  } finally {
    await herald.kill();
  }
});

test('presence: join/leave events on every transport and the presence list', { timeout: 60_000 }, async () => {
  const herald = await startHerald();
  try {
    const topic = 'pres.room';
    // A listener per transport, each asking for join/leave events.
    const listeners = {};
    for (const transport of ['ws', 'sse', 'poll']) {
      const { client } = makeClient(herald.url, { transports: [transport], presence: true, pollTimeoutMs: 1_000 });
      const events = [];
      client.on('join', (e) => events.push(e));
      client.on('leave', (e) => events.push(e));
      const { sub } = collect(client, topic);
      await sub.ready;
      listeners[transport] = { client, events };
    }
    // A visitor joins and leaves; every listener hears both.
    const { client: visitor } = makeClient(herald.url, { transports: ['ws'] });
    const { sub } = collect(visitor, topic);
    await sub.ready;
    const list = await visitor.presence(topic);
    assert.deepEqual(list.map((c) => c.transport).sort(), ['poll', 'sse', 'ws', 'ws']);
    const visitorIds = new Set(list.map((c) => c.client_id));
    for (const [transport, { events }] of Object.entries(listeners)) {
      await waitFor(() => events.some((e) => e.type === 'join' && e.client.transport === 'ws' && e.topic === topic), {
        timeoutMs: 10_000,
        describe: async () => `${transport}: ${JSON.stringify(events)}`,
      });
    }
    visitor.close();
    for (const [transport, { events }] of Object.entries(listeners)) {
      await waitFor(() => events.some((e) => e.type === 'leave' && visitorIds.has(e.client.client_id)), {
        timeoutMs: 10_000,
        describe: async () => `${transport}: ${JSON.stringify(events)}`,
      });
    }
    const after = await listeners.ws.client.presence(topic);
    assert.equal(after.length, 3, JSON.stringify(after));
    // A refused read has the server's error code.
    await assert.rejects(listeners.ws.client.presence('bad..topic'), (e) => e.code === 'invalid_topic');
  } finally {
    await herald.kill();
  }
});
