// Issue 25 with real processes: a 2-node cluster loses its NATS server and
// the node the client is on is SIGKILLed and restarted meanwhile. Both
// nodes refuse subscriptions (WebSocket upgrade 503, SSE `unavailable`
// event, long-poll 503) until NATS is back: the client waits — no error, no
// connection to a node that cannot serve, not a hot loop — and then resumes
// with exactly the messages published before, during and after the outage.
// Over WebSocket, SSE and long-poll (forced).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import WebSocket from 'ws';
import { HeraldClient } from '../../dist/index.js';
import { assertExactSequence, byTopic, publishRetrying, sleep, startCluster, startNats, waitFor, waitReadyz } from '../lib/herald.mjs';

test('cluster without NATS: subscribers wait for a node that can serve, then resume exactly', { timeout: 150_000 }, async (t) => {
  const cluster = await startCluster(2);
  t.after(() => cluster.close());
  const urls = cluster.nodes.map((h) => h.url);
  for (const transport of ['ws', 'sse', 'poll']) {
    const client = new HeraldClient({
      url: urls,
      transports: [transport],
      WebSocket,
      reconnect: { minDelayMs: 50, maxDelayMs: 500 },
      openTimeoutMs: 2_000,
      pollTimeoutMs: 3_000,
      upgradeIntervalMs: 0,
    });
    t.after(() => client.close());
    const events = [];
    const errors = [];
    client.on('connect', (e) => events.push(`connect:${e.transport}@${e.url}`));
    client.on('reconnecting', (e) => events.push(`reconnecting@${e.url}`));
    client.on('error', (e) => errors.push(`${e.code ?? ''} ${e.message}`));
    const prefix = `nonats${transport}`;
    const topics = [`${prefix}.a`, `${prefix}.b`];
    const got = [];
    const sub = client.subscribe(`${prefix}.>`, (m) => got.push({ topic: m.topic, seq: m.seq }));
    await sub.ready;
    const acks = [];
    const publish = async (from, to) => {
      for (let i = from; i < to; i++) {
        acks.push(await publishRetrying(urls, topics[i % 2], { i }, { key: `${prefix}-${i}`, deadlineMs: 60_000 }));
      }
    };
    await publish(0, 10);
    await waitFor(() => got.length >= 10, { describe: () => `${transport}: ${got.length}/10` });

    const port = cluster.nats.port;
    await cluster.nats.kill();
    const index = cluster.nodes.findIndex((h) => h.url === client.url);
    await cluster.nodes[index].kill();
    cluster.nodes[index] = await cluster.nodes[index].restart({ waitReady: false });
    events.length = 0;
    // Published during the outage: acknowledged once NATS is back.
    const during = publish(10, 16);
    await sleep(3_000);
    assert.deepEqual(events.filter((e) => e.startsWith('connect')), [], `${transport}: a node without NATS served it`);
    const rounds = events.filter((e) => e.startsWith('reconnecting')).length;
    assert.ok(rounds >= 2 && rounds <= 12, `${transport}: ${rounds} reconnection rounds in 3 s: ${events.join(' ')}`);
    assert.equal(got.length, 10);
    assert.equal(sub.isClosed, false);

    cluster.nats = await startNats({ port });
    await Promise.all(urls.map((u) => waitReadyz(u, 45_000)));
    await during;
    await publish(16, 30);
    await waitFor(() => got.length >= 30, {
      timeoutMs: 30_000,
      describe: () => `${transport}: ${got.length}/30; events ${events.join(' ')}; errors ${errors.join(' | ')}`,
    });
    await sleep(300);
    const acked = byTopic(acks);
    const received = byTopic(got);
    for (const topic of topics) {
      const seqs = [...acked.get(topic)].sort((a, b) => a - b);
      assertExactSequence(seqs, seqs.length, `${transport}: acks of ${topic}`);
      assertExactSequence(received.get(topic) ?? [], seqs.length, `${transport}: ${topic}`);
    }
    assert.deepEqual(errors, []);
    client.close();
  }
});
