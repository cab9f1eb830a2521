// The client in Node against a real herald: on each transport, herald is
// SIGKILLed and restarted (same port, same data dir) mid-stream while the
// client keeps publishing (buffered while the node is down); every
// subscription - a wildcard over two topics and a concrete one - must end
// with exactly seq 1..N per topic, and every publish acknowledged once.
// Also: a client that starts on SSE because WebSocket is unavailable
// upgrades back to WebSocket without a gap or a duplicate.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import WebSocket from 'ws';
import { HeraldClient } from '../../dist/index.js';
import { assertExactSequence, byTopic, sleep, startHerald, waitFor } from '../lib/herald.mjs';

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
