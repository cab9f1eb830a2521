// A real cluster: nats-server and three herald nodes. The client (Node,
// WebSocket) is pointed at node 1 with the list [n1, n2, n3]; publishers
// publish continuously through nodes 2 and 3 (REST, idempotency keys,
// retried on 503 while ownership moves); node 1 is SIGKILLed mid-stream. The
// client must move to another node and its subscriptions - a wildcard over
// three topics and a concrete one - must end with exactly 1..N per topic.
// The same runs over SSE and long-poll (forced), each against another node
// being killed (the killed node is restarted between runs: with one node
// left a publish cannot reach its replica quorum).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import WebSocket from 'ws';
import { HeraldClient } from '../../dist/index.js';
import { assertExactSequence, byTopic, publishRetrying, sleep, startCluster, waitFor } from '../lib/herald.mjs';

const SCENARIOS = [
  { transport: 'ws', killIndex: 0 },
  { transport: 'sse', killIndex: 1 },
  { transport: 'poll', killIndex: 2 },
];

test('cluster: the node a client is on is SIGKILLed mid-stream -> it resumes on another node with the exact sequence', { timeout: 150_000 }, async (t) => {
  const cluster = await startCluster(3);
  t.after(() => cluster.close());
  const urls = cluster.nodes.map((h) => h.url);
  for (const { transport, killIndex } of SCENARIOS) {
    const victim = cluster.nodes[killIndex];
    // Start on the victim, rotate through the others.
    const rotation = [...urls.slice(killIndex), ...urls.slice(0, killIndex)];
    const others = urls.filter((u) => u !== victim.url && cluster.nodes.find((h) => h.url === u).running);
    const started = Date.now();
    const client = new HeraldClient({
      url: rotation,
      transports: [transport],
      WebSocket,
      reconnect: { minDelayMs: 50, maxDelayMs: 500 },
      openTimeoutMs: 2_000,
      upgradeIntervalMs: 0,
    });
    t.after(() => client.close());
    const events = [];
    const errors = [];
    client.on('connect', (e) => events.push(`connect:${e.transport}@${e.url}`));
    client.on('disconnect', (e) => events.push(`disconnect@${e.url}`));
    client.on('error', (e) => errors.push(`${e.code ?? ''} ${e.message}`));
    client.on('gap', (g) => errors.push(`gap ${JSON.stringify(g)}`));
    const prefix = `cl${transport}`;
    const topics = [`${prefix}.a`, `${prefix}.b`, `${prefix}.c.d`];
    const wild = [];
    const exact = [];
    const s1 = client.subscribe(`${prefix}.>`, (m) => wild.push({ topic: m.topic, seq: m.seq }));
    const s2 = client.subscribe(topics[1], (m) => exact.push(m.seq));
    await Promise.all([s1.ready, s2.ready]);
    assert.equal(client.url, victim.url);

    const N = 150; // per publisher
    const acks = [];
    let killed = false;
    const publisher = async (base, offset) => {
      for (let i = 0; i < N; i++) {
        const topic = topics[(i + offset) % topics.length];
        acks.push(await publishRetrying([base, ...others.filter((u) => u !== base)], topic, { i, base }, { key: `${prefix}-${offset}-${i}` }));
        if (offset === 0 && i === 50 && !killed) {
          killed = true;
          await victim.kill();
        }
        await sleep(3);
      }
    };
    await Promise.all(others.map((u, k) => publisher(u, k)));
    const total = acks.length;
    await waitFor(() => wild.length >= total, {
      timeoutMs: 30_000,
      describe: () => `${transport}: wildcard got ${wild.length}/${total}; events ${events.join(' ')}; errors ${errors.join(' | ')}`,
    });
    await sleep(500);
    const acked = byTopic(acks);
    const got = byTopic(wild);
    for (const topic of topics) {
      const seqs = [...acked.get(topic)].sort((a, b) => a - b);
      assertExactSequence(seqs, seqs.length, `${transport}: acks of ${topic}`);
      assertExactSequence(got.get(topic) ?? [], seqs.length, `${transport}: wildcard ${topic}`);
    }
    assertExactSequence(exact, acked.get(topics[1]).length, `${transport}: concrete ${topics[1]}`);
    assert.deepEqual(errors, []);
    assert.ok(killed);
    assert.notEqual(client.url, victim.url, `moved off the killed node (${events.join(' ')})`);
    client.close();
    // Bring the node back for the next run.
    cluster.nodes[killIndex] = await victim.restart();
    console.log(`[cluster] ${transport}: ${total} messages in ${Date.now() - started} ms (incl. restart); ${events.join(' ')}`);
  }
});
