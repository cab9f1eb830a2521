// The browser bundle (dist/herald.min.js) in real headless Chromium against
// a real herald. The page (another origin than herald, so CORS is real)
// creates a HeraldClient, subscribes to a wildcard over two topics and to
// one of them directly, and publishes a stream of messages itself. Mid-stream
// herald is SIGKILLed and restarted on the same port and data dir. Every
// subscription must end with exactly seq 1..N per topic, every publish
// acknowledged once.
//
//   ws:   the page's own WebSocket;
//   sse:  window.WebSocket replaced by a constructor that throws -> the
//         client falls back to SSE (EventSource) + REST publishes;
//   poll: WebSocket and EventSource both replaced -> long-poll.

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  PACKAGE_ROOT,
  assertExactSequence,
  byTopic,
  launchChromium,
  servePage,
  sleep,
  startHerald,
  tempDir,
  waitFor,
} from '../lib/herald.mjs';

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Herald JS client</title>
<style>body{font:14px/1.4 monospace;margin:16px}</style></head><body>
<h1>Herald JS client in Chromium</h1>
<pre id="status">loading…</pre>
<script>
  const q = new URLSearchParams(location.search);
  const block = (q.get('block') || '').split(',').filter(Boolean);
  if (block.includes('ws')) window.WebSocket = function () { throw new Error('WebSocket blocked by the test page'); };
  if (block.includes('es')) window.EventSource = function () { throw new Error('EventSource blocked by the test page'); };
</script>
<script src="/herald.min.js"></script>
<script>
  window.T = { msgs: {}, data: {}, events: [], errors: [], acks: [], publishErrors: [] };
  const status = document.getElementById('status');
  function render() {
    const counts = Object.fromEntries(Object.entries(T.msgs).map(([p, l]) => [p, l.length]));
    status.textContent = 'transport: ' + (window.client && client.transport) + '\\nreceived: ' + JSON.stringify(counts) +
      '\\nacks: ' + T.acks.length + '\\nevents: ' + T.events.join(' ') + '\\nerrors: ' + T.errors.join(' | ');
  }
  window.startClient = (opts, patterns, subOpts) => {
    const c = new HeraldClient(opts);
    window.client = c;
    c.on('connect', (e) => { T.events.push('connect:' + e.transport + (e.upgraded ? ':upgraded' : '')); render(); });
    c.on('disconnect', (e) => { T.events.push('disconnect:' + e.transport); render(); });
    c.on('reconnecting', () => T.events.push('reconnecting'));
    c.on('error', (e) => { T.errors.push((e.code || '') + ' ' + e.message); render(); });
    c.on('gap', (g) => { T.errors.push('gap ' + JSON.stringify(g)); render(); });
    const subs = patterns.map((p) => {
      T.msgs[p] = [];
      T.data[p] = [];
      return c.subscribe(p, (m) => { T.msgs[p].push({ topic: m.topic, seq: m.seq }); T.data[p].push(m.data); render(); }, subOpts || {});
    });
    return Promise.all(subs.map((s) => s.ready)).then(() => c.transport);
  };
  // Binary publishes from the page (arrays of byte values), and what the
  // subscriptions got, Uint8Array data as {bin: [...]}.
  window.publishBytes = async (topic, arrays) => {
    const acks = [];
    for (const a of arrays) acks.push(await client.publish(topic, new Uint8Array(a)));
    return acks;
  };
  window.readData = (p) => T.data[p].map((d) => (d instanceof Uint8Array ? { bin: Array.from(d) } : d));
  // Fires publishes without waiting for acks (buffered while offline).
  window.publishOne = (topic, i) => {
    client.publish(topic, { i }).then(
      (ack) => { T.acks.push(ack); render(); },
      (e) => T.publishErrors.push(topic + ' ' + i + ': ' + (e.code || '') + ' ' + e.message),
    );
  };
</script>
</body></html>`;

let contextPromise;
const browser = () => (contextPromise ??= launchChromium());
let pagePromise;
const pageServer = () => (pagePromise ??= servePage(PAGE));
after(async () => {
  if (contextPromise) await (await contextPromise.catch(() => null))?.close();
  if (pagePromise) await (await pagePromise).close();
});

const SCENARIOS = [
  { transport: 'ws', block: '' },
  { transport: 'sse', block: 'ws' },
  { transport: 'poll', block: 'ws,es' },
];

for (const { transport, block } of SCENARIOS) {
  const title =
    transport === 'ws'
      ? 'ws: subscribe, publish, receive; herald SIGKILLed + restarted mid-stream -> exact sequence'
      : `${block.replace(',', '+')} blocked -> falls back to ${transport}; herald SIGKILLed + restarted mid-stream -> exact sequence`;
  test(title, { timeout: 60_000 }, async (t) => {
    const herald = await startHerald();
    let current = herald;
    t.after(async () => {
      await current.kill();
      await herald.kill();
    });
    const context = await browser();
    const page = await context.newPage();
    t.after(() => page.close());
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    const { url } = await pageServer();
    await page.goto(`${url}?block=${block}`);
    const topics = [`b${transport}.eu`, `b${transport}.us`];
    const patterns = [`b${transport}.*`, topics[1]];
    const got = await page.evaluate(
      ([herald, patterns]) =>
        window.startClient(
          {
            url: herald,
            reconnect: { minDelayMs: 50, maxDelayMs: 400 },
            openTimeoutMs: 2000,
            upgradeIntervalMs: 0,
          },
          patterns,
        ),
      [herald.url, patterns],
    );
    assert.equal(got, transport, 'transport in use');
    const N = 240;
    for (let i = 0; i < N; i++) {
      if (i === 80) {
        await current.kill();
        setTimeout(async () => {
          current = await herald.restart();
        }, 400);
      }
      await page.evaluate(([topic, i]) => window.publishOne(topic, i), [topics[i % 2], i]);
      await sleep(4);
    }
    const state = () => page.evaluate(() => ({ ...window.T, transport: window.client.transport }));
    await waitFor(
      async () => {
        const s = await state();
        return s.acks.length === N && s.msgs[patterns[0]].length >= N && s.msgs[patterns[1]].length >= N / 2;
      },
      {
        timeoutMs: 25_000,
        describe: async () => {
          const s = await state();
          return `acks ${s.acks.length}/${N}, wildcard ${s.msgs[patterns[0]].length}, concrete ${s.msgs[patterns[1]].length}; events ${s.events.join(' ')}; errors ${s.errors.join(' | ')}; publish errors ${s.publishErrors.join(' | ')}`;
        },
      },
    );
    await sleep(500);
    const s = await state();
    const acked = byTopic(s.acks);
    for (const topic of topics) {
      const seqs = [...acked.get(topic)].sort((a, b) => a - b);
      assertExactSequence(seqs, N / 2, `${transport}: acks of ${topic}`);
    }
    const wild = byTopic(s.msgs[patterns[0]]);
    for (const topic of topics) assertExactSequence(wild.get(topic) ?? [], N / 2, `${transport}: wildcard ${topic}`);
    assertExactSequence(s.msgs[patterns[1]].map((m) => m.seq), N / 2, `${transport}: concrete ${topics[1]}`);
    assert.deepEqual(s.errors, []);
    assert.deepEqual(s.publishErrors, []);
    assert.deepEqual(pageErrors, []);
    assert.equal(s.transport, transport);
    assert.ok(s.events.includes(`disconnect:${transport}`), s.events.join(' '));
    assert.ok(s.events.every((e) => !e.startsWith('connect:') || e === `connect:${transport}`), s.events.join(' '));
    const artifacts = join(PACKAGE_ROOT, '.artifacts');
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, `browser-${transport}.png`) });
    console.log(`[browser] ${transport}: ${N} published from the page, kill -9 + restart; events: ${s.events.join(' ')}`);
  });
}

// Issue 21 (D2): the deepest payload the broker accepts (100 levels, its hard
// maximum) reaches the page intact over each transport, EventSource included.
test('the deepest accepted message reaches the page on every transport', { timeout: 60_000 }, async (t) => {
  const dir = tempDir('herald-js-deep-');
  const config = join(dir, 'herald.toml');
  writeFileSync(config, '[limits]\nmax_json_depth = 100\n');
  const herald = await startHerald({ args: ['--config', config] });
  t.after(() => herald.kill());
  let deepest = 'core';
  for (let i = 0; i < 100; i++) deepest = [deepest];
  const context = await browser();
  const { url } = await pageServer();
  for (const { transport, block } of SCENARIOS) {
    const topic = `deep.${transport}`;
    const res = await fetch(`${herald.url}/v1/topics/${topic}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(deepest),
    });
    assert.equal(res.status, 200, await res.text());
    const page = await context.newPage();
    t.after(() => page.close());
    await page.goto(`${url}?block=${block}`);
    const got = await page.evaluate(
      ([herald, topic]) => window.startClient({ url: herald, upgradeIntervalMs: 0 }, [topic], { since: 0 }),
      [herald.url, topic],
    );
    assert.equal(got, transport, 'transport in use');
    await waitFor(async () => (await page.evaluate((p) => window.T.data[p].length, topic)) >= 1, {
      describe: async () => JSON.stringify(await page.evaluate(() => window.T.errors)),
    });
    const s = await page.evaluate((p) => ({ data: window.T.data[p], errors: window.T.errors }), topic);
    assert.deepEqual(s.data, [deepest], transport);
    assert.deepEqual(s.errors, [], transport);
  }
});

// Binary payloads in the browser: published from the page (a binary frame
// over the page's WebSocket, an octet-stream fetch on SSE/long-poll) and
// received back as Uint8Array byte for byte (binary frames read as
// ArrayBuffer, base64 events of the browser's own EventSource, poll answers).
test('binary payloads round-trip through the page on every transport', { timeout: 60_000 }, async (t) => {
  const herald = await startHerald();
  t.after(() => herald.kill());
  const context = await browser();
  const { url } = await pageServer();
  const random = (n) => Array.from({ length: n }, () => Math.floor(Math.random() * 256));
  const payloads = [[], [0x00], [0xff], [0xc3, 0x28], [0x00, 0xff, 0x00, 0xfe], random(17), random(1000), random(20_000)];
  for (const { transport, block } of SCENARIOS) {
    const topic = `pagebin.${transport}`;
    const page = await context.newPage();
    t.after(() => page.close());
    await page.goto(`${url}?block=${block}`);
    const got = await page.evaluate(
      ([herald, topic]) => window.startClient({ url: herald, upgradeIntervalMs: 0 }, [topic]),
      [herald.url, topic],
    );
    assert.equal(got, transport, 'transport in use');
    const acks = await page.evaluate(([topic, arrays]) => window.publishBytes(topic, arrays), [topic, payloads]);
    assert.deepEqual(acks.map((a) => a.seq), payloads.map((_, i) => i + 1));
    await waitFor(async () => (await page.evaluate((p) => window.T.data[p].length, topic)) >= payloads.length, {
      describe: async () => JSON.stringify(await page.evaluate(() => window.T.errors)),
    });
    const data = await page.evaluate((p) => window.readData(p), topic);
    assert.deepEqual(data, payloads.map((bin) => ({ bin })), transport);
    assert.deepEqual(await page.evaluate(() => window.T.errors), [], transport);
  }
});
