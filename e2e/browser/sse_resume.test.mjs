// SSE resume in real headless Chromium, with the page's own EventSource.
//
// The page (served from another origin than herald) opens
// `new EventSource(<herald or proxy>/v1/sse?topic=...)` and records every
// `message` (topic, seq), every `gap`, and every `open`/`error`. Herald tags
// each event with `id: <cursor>` and starts the stream with an id-only block,
// so when the connection drops the browser reconnects by itself (after the
// server's `retry: 1000`) sending `Last-Event-ID`, and must get exactly the
// messages it missed: no gap, no duplicate.
//
//   a. network drop: a TCP proxy between browser and herald cuts every live
//      connection twice while messages are being published;
//   b. herald SIGKILLed mid-stream and restarted on the same port and data dir;
//   c. a wildcard subscription (orders.>) over two topics with proxy cuts, the
//      first cut landing before the second topic has any message.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';

import {
  ARTIFACTS_DIR,
  launchChromium,
  publish,
  servePage,
  sleep,
  startCutProxy,
  startHerald,
} from './lib/herald.mjs';

const N = 300; // messages per test
const PUBLISH_GAP_MS = 5; // pause between publishes
const TEST_TIMEOUT_MS = 60_000;
const DELIVERY_TIMEOUT_MS = 25_000; // wait for the page to catch up
const SETTLE_MS = 750; // extra wait after catching up, so a late duplicate shows

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Herald SSE resume</title>
<style>body{font:14px/1.4 monospace;margin:16px}h1{font-size:18px}.bad{color:#b00}.ok{color:#070}</style>
</head><body>
<h1>Herald SSE resume (EventSource)</h1>
<div id="src"></div>
<pre id="status">connecting…</pre>
<pre id="tail"></pre>
<script>
  const src = new URLSearchParams(location.search).get('src');
  document.getElementById('src').textContent = 'stream: ' + src;
  window.msgs = [];
  window.gaps = [];
  window.opens = 0;
  window.errors = 0;
  window.lastIds = [];
  const status = document.getElementById('status');
  const tail = document.getElementById('tail');
  function render() {
    const byTopic = {};
    for (const m of msgs) byTopic[m.topic] = m.seq;
    status.textContent =
      'messages: ' + msgs.length + '\\nopens: ' + opens + '  errors: ' + errors +
      '  gaps: ' + gaps.length + '  readyState: ' + es.readyState +
      '\\nlast seq per topic: ' + JSON.stringify(byTopic);
    status.className = gaps.length ? 'bad' : 'ok';
  }
  const es = new EventSource(src);
  window.es = es;
  es.addEventListener('open', () => { opens++; render(); });
  es.addEventListener('error', () => { errors++; render(); });
  es.addEventListener('message', (e) => {
    const d = JSON.parse(e.data);
    msgs.push({ topic: d.topic, seq: d.seq });
    if (e.lastEventId && e.lastEventId !== lastIds[lastIds.length - 1]) {
      lastIds.push(e.lastEventId);
      if (lastIds.length > 20) lastIds.shift();
    }
    tail.textContent = 'last event id: ' + e.lastEventId;
    render();
  });
  es.addEventListener('gap', (e) => { gaps.push(JSON.parse(e.data)); render(); });
</script>
</body></html>`;

// One browser for the file, launched on first use so that a missing
// Chromium fails every test with the launcher's message.
let contextPromise;
const browser = () => (contextPromise ??= launchChromium());
let pageServerPromise;
const pageServer = () => (pageServerPromise ??= servePage(PAGE));
after(async () => {
  if (contextPromise) await (await contextPromise.catch(() => null))?.close();
  if (pageServerPromise) await (await pageServerPromise).close();
});

/** Opens the page subscribed to `sseUrl`; resolves once the stream is open. */
async function openPage(sseUrl) {
  const context = await browser();
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  const { url } = await pageServer();
  await page.goto(`${url}?src=${encodeURIComponent(sseUrl)}`);
  await page.waitForFunction(() => window.opens >= 1, null, { timeout: 10_000 });
  // The opening id-only block follows the headers at once; give it a moment
  // so the very first message is published after the subscription exists.
  await sleep(100);
  return { page, pageErrors };
}

const pageState = (page) =>
  page.evaluate(() => ({
    msgs: window.msgs,
    gaps: window.gaps,
    opens: window.opens,
    errors: window.errors,
    readyState: window.es.readyState,
    lastIds: window.lastIds,
  }));

/** Waits until the page holds at least `count` messages (then a little more). */
async function waitForMessages(page, count) {
  try {
    await page.waitForFunction((n) => window.msgs.length >= n, count, {
      timeout: DELIVERY_TIMEOUT_MS,
      polling: 50,
    });
  } catch (e) {
    const s = await pageState(page);
    throw new Error(
      `page received ${s.msgs.length}/${count} messages within ${DELIVERY_TIMEOUT_MS} ms ` +
        `(opens=${s.opens} errors=${s.errors} readyState=${s.readyState}); ` +
        `${describeByTopic(s.msgs)}; ` +
        `last ids: ${JSON.stringify(s.lastIds.slice(-3))}`,
      { cause: e },
    );
  }
  await sleep(SETTLE_MS);
  return pageState(page);
}

/** describeSeqs for each topic, against 1..(highest seq seen). */
function describeByTopic(msgs) {
  const byTopic = new Map();
  for (const m of msgs) {
    if (!byTopic.has(m.topic)) byTopic.set(m.topic, []);
    byTopic.get(m.topic).push(m.seq);
  }
  if (byTopic.size === 0) return 'no message at all';
  return [...byTopic].map(([topic, seqs]) => `${topic}: ${describeSeqs(seqs, Math.max(...seqs))}`).join('; ');
}

/** Human-readable difference between `seqs` and 1..n. */
function describeSeqs(seqs, n) {
  const seen = new Map();
  const dups = [];
  const outOfOrder = [];
  for (let i = 0; i < seqs.length; i++) {
    seen.set(seqs[i], (seen.get(seqs[i]) ?? 0) + 1);
    if (seen.get(seqs[i]) === 2) dups.push(seqs[i]);
    if (i > 0 && seqs[i] <= seqs[i - 1]) outOfOrder.push(`${seqs[i - 1]}->${seqs[i]}@${i}`);
  }
  const missing = [];
  for (let s = 1; s <= n; s++) if (!seen.has(s)) missing.push(s);
  const extra = [...seen.keys()].filter((s) => s < 1 || s > n);
  const short = (a) => (a.length > 20 ? `${a.slice(0, 20).join(',')},… (${a.length})` : a.join(','));
  return `got ${seqs.length} expected ${n}; missing [${short(missing)}] duplicates [${short(dups)}] out-of-order [${short(outOfOrder)}] unexpected [${short(extra)}]`;
}

function assertExactSequence(seqs, n, label) {
  const expected = Array.from({ length: n }, (_, i) => i + 1);
  const ok = seqs.length === n && seqs.every((s, i) => s === expected[i]);
  assert.ok(ok, `${label}: ${describeSeqs(seqs, n)}`);
}

function summary(t, text) {
  console.log(`[sse_resume] ${t.name}: ${text}`);
}

/**
 * The browser's own reconnects, as the proxy saw them: every SSE request
 * after the first must carry the Last-Event-ID the page last received.
 * Returns how many SSE requests there were.
 */
function assertReconnectsCarryLastEventId(proxy) {
  const sse = proxy.requests.filter((r) => r.method === 'GET' && r.target.startsWith('/v1/sse'));
  assert.ok(sse.length >= 3, `SSE requests through the proxy: ${sse.length}`);
  assert.equal(sse[0].headers['last-event-id'], undefined, 'first request has no Last-Event-ID');
  for (const [i, r] of sse.slice(1).entries()) {
    assert.match(r.headers['last-event-id'] ?? '', /^1~\d+~/, `reconnect #${i + 1} carries a Last-Event-ID cursor`);
  }
  return sse.length;
}

test('a. network drop mid-stream: EventSource resumes with Last-Event-ID, exact 1..N', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const started = Date.now();
  const herald = await startHerald();
  t.after(() => herald.kill());
  const proxy = await startCutProxy(herald.addr);
  t.after(() => proxy.close());
  const topic = 'e2e.drop';
  const { page, pageErrors } = await openPage(`${proxy.url}/v1/sse?topic=${topic}`);
  t.after(() => page.close());

  const cutAt = [Math.floor(N / 3), Math.floor((2 * N) / 3)];
  const cuts = [];
  for (let i = 1; i <= N; i++) {
    if (i === cutAt[0]) cuts.push(proxy.cut());
    if (i === cutAt[1]) {
      // Cut again only once the browser is back, so this second drop also
      // hits a live stream (possibly in the middle of the replay).
      await page.waitForFunction(() => window.opens >= 2, null, { timeout: 10_000, polling: 20 });
      cuts.push(proxy.cut());
    }
    const ack = await publish(herald.url, topic, { i });
    assert.equal(ack.seq, i, `ack for publish #${i}`);
    await sleep(PUBLISH_GAP_MS);
  }
  const s = await waitForMessages(page, N);

  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS_DIR, 'sse_resume.png'), fullPage: true });

  assert.deepEqual(pageErrors, [], 'page script errors');
  assert.deepEqual(cuts.map((n) => n >= 1), [true, true], `each cut dropped a live connection (cut ${cuts})`);
  assert.deepEqual(s.gaps, [], 'gap events');
  assert.ok(s.msgs.every((m) => m.topic === topic), 'every message is on the subscribed topic');
  assertExactSequence(s.msgs.map((m) => m.seq), N, topic);
  assert.ok(s.opens >= 3, `EventSource reopened after each cut (opens=${s.opens})`);
  assert.ok(proxy.connections >= 3, `browser reconnected through the proxy (connections=${proxy.connections})`);
  const sseRequests = assertReconnectsCarryLastEventId(proxy);
  summary(
    t,
    `messages=${s.msgs.length} cuts=${cuts.length} reconnects=${s.opens - 1} proxy_connections=${proxy.connections} sse_requests=${sseRequests} gaps=${s.gaps.length} in ${((Date.now() - started) / 1000).toFixed(1)}s`,
  );
});

test('b. herald SIGKILLed and restarted on the same port and data dir: exact acknowledged 1..N', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const started = Date.now();
  let herald = await startHerald();
  t.after(() => herald.kill());
  const { port, dataDir, url } = herald;
  const topic = 'e2e.restart';
  const { page, pageErrors } = await openPage(`${url}/v1/sse?topic=${topic}`);
  t.after(() => page.close());

  const killAt = Math.floor(N / 2);
  const acked = [];
  let failedAttempts = 0;
  let restart = null;
  let downMs = 0;
  while (acked.length < N) {
    if (acked.length === killAt && restart === null) {
      // Kill between publishes so every accepted message has an ack, then
      // bring it back on the same address and data dir while publishing
      // keeps trying (and failing) in the meantime.
      const t0 = Date.now();
      await herald.kill();
      restart = (async () => {
        await sleep(700);
        herald = await startHerald({ port, dataDir });
        downMs = Date.now() - t0;
      })();
      restart.catch(() => {});
    }
    try {
      const ack = await publish(url, topic, { n: acked.length + 1 }, { timeoutMs: 2_000 });
      acked.push(ack.seq);
    } catch (e) {
      failedAttempts += 1;
      if (restart === null || failedAttempts > 400) throw e;
      await sleep(25);
      continue;
    }
    await sleep(PUBLISH_GAP_MS);
  }
  await restart;
  assert.ok(failedAttempts > 0, 'some publishes were refused while herald was down');
  assertExactSequence(acked, N, `${topic} acks across the restart`);

  const s = await waitForMessages(page, N);
  assert.deepEqual(pageErrors, [], 'page script errors');
  assert.deepEqual(s.gaps, [], 'gap events');
  assert.ok(s.msgs.every((m) => m.topic === topic), 'every message is on the subscribed topic');
  assertExactSequence(s.msgs.map((m) => m.seq), N, topic);
  assert.ok(s.opens >= 2, `EventSource reopened after the restart (opens=${s.opens})`);
  summary(
    t,
    `messages=${s.msgs.length} acked=${acked.length} refused_attempts=${failedAttempts} down_ms=${downMs} reconnects=${s.opens - 1} es_errors=${s.errors} gaps=${s.gaps.length} in ${((Date.now() - started) / 1000).toFixed(1)}s`,
  );
});

test('c. wildcard orders.> over two topics with proxy cuts: each topic exact', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const started = Date.now();
  const herald = await startHerald();
  t.after(() => herald.kill());
  const proxy = await startCutProxy(herald.addr);
  t.after(() => proxy.close());
  const { page, pageErrors } = await openPage(`${proxy.url}/v1/sse?topic=orders.>`);
  t.after(() => page.close());

  // orders.eu alone first; the first cut lands before orders.us has any
  // message, so the resume cursor does not list orders.us yet and its
  // messages must come back through the cursor's time floor.
  const usFrom = 60;
  const cutAt = [40, 200];
  const counts = { 'orders.eu': 0, 'orders.us': 0 };
  const cuts = [];
  for (let i = 1; i <= N; i++) {
    if (i === cutAt[0]) cuts.push(proxy.cut());
    if (i === cutAt[1]) {
      await page.waitForFunction(() => window.opens >= 2, null, { timeout: 10_000, polling: 20 });
      cuts.push(proxy.cut());
    }
    const topic = i < usFrom || i % 2 === 0 ? 'orders.eu' : 'orders.us';
    const ack = await publish(herald.url, topic, { i });
    counts[topic] += 1;
    assert.equal(ack.seq, counts[topic], `ack for publish #${i} on ${topic}`);
    await sleep(PUBLISH_GAP_MS);
  }
  const s = await waitForMessages(page, N);

  assert.deepEqual(pageErrors, [], 'page script errors');
  assert.deepEqual(cuts.map((n) => n >= 1), [true, true], `each cut dropped a live connection (cut ${cuts})`);
  assert.deepEqual(s.gaps, [], 'gap events');
  const topics = new Set(s.msgs.map((m) => m.topic));
  assert.deepEqual([...topics].sort(), ['orders.eu', 'orders.us'], 'topics delivered');
  for (const topic of Object.keys(counts)) {
    assertExactSequence(s.msgs.filter((m) => m.topic === topic).map((m) => m.seq), counts[topic], topic);
  }
  assert.equal(s.msgs.length, N, 'total messages');
  assert.ok(s.opens >= 3, `EventSource reopened after each cut (opens=${s.opens})`);
  assert.ok(proxy.connections >= 3, `browser reconnected through the proxy (connections=${proxy.connections})`);
  const sseRequests = assertReconnectsCarryLastEventId(proxy);
  summary(
    t,
    `messages=${s.msgs.length} (orders.eu=${counts['orders.eu']} orders.us=${counts['orders.us']}) cuts=${cuts.length} reconnects=${s.opens - 1} proxy_connections=${proxy.connections} sse_requests=${sseRequests} gaps=${s.gaps.length} in ${((Date.now() - started) / 1000).toFixed(1)}s`,
  );
});
