// The live dashboard (`GET /dashboard`) in real headless Chromium.
//
//   a. A herald with auth off: open /dashboard, then create traffic — two
//      WebSocket subscribers (from a second browser tab), three SSE
//      subscribers and a long-poll loop (from node), and a burst of REST
//      publishes — and check that the page follows it: connections per
//      transport, subscriptions, topics, the published and delivered totals,
//      the publish/delivery rates, the charts' SVG paths and the busiest
//      topics table. The page must
//      make no request to any other origin and log no error. A screenshot is
//      written to e2e/browser/artifacts/dashboard.png.
//   b. A herald with an API key: the page asks for credentials, then goes live
//      with the key.

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { launchChromium, publish, sleep, startHerald, tempDir } from './lib/herald.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = join(HERE, 'artifacts');
const TEST_TIMEOUT_MS = 90_000;
const WAIT_MS = 20_000;
const INTERVAL_MS = 250; // the page's snapshot interval (default 1000)

let contextPromise;
const browser = () => (contextPromise ??= launchChromium());
after(async () => {
  if (contextPromise) await (await contextPromise.catch(() => null))?.close();
});

/** Opens /dashboard; records page errors, console errors and every request URL. */
async function openDashboard(baseUrl, query = `interval_ms=${INTERVAL_MS}`) {
  const context = await browser();
  const page = await context.newPage();
  const problems = [];
  const requests = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[13]/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on('request', (r) => requests.push(r.url()));
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(`${baseUrl}/dashboard?${query}`);
  return { page, problems, requests };
}

/** The `data-value` of the element with this data-testid, as a number. */
const value = (page, id) =>
  page.$eval(`[data-testid="${id}"]`, (e) => Number(e.dataset.value));

/** Waits until `data-value` of `id` satisfies `op` against `n`. */
async function waitValue(page, id, op, n) {
  try {
    await page.waitForFunction(
      ([id, op, n]) => {
        const v = Number(document.querySelector(`[data-testid="${id}"]`)?.dataset.value);
        return op === '>=' ? v >= n : op === '>' ? v > n : v === n;
      },
      [id, op, n],
      { timeout: WAIT_MS, polling: 50 },
    );
  } catch (e) {
    throw new Error(`${id} never became ${op} ${n} (now ${await value(page, id)})`, { cause: e });
  }
}

const chart = (page, name) =>
  page.$eval(`[data-testid="chart-${name}"]`, (svg) => ({
    points: Number(svg.dataset.points),
    max: Number(svg.dataset.max),
    d: svg.querySelector('path.line').getAttribute('d'),
  }));

/** Keeps an SSE subscription open from node, reading (and counting) events. */
function sseSubscriber(baseUrl, topic) {
  const abort = new AbortController();
  const state = { events: 0, abort: () => abort.abort() };
  state.done = (async () => {
    const res = await fetch(`${baseUrl}/v1/sse?topic=${encodeURIComponent(topic)}`, { signal: abort.signal });
    assert.equal(res.status, 200);
    const decoder = new TextDecoder();
    for await (const chunk of res.body) state.events += (decoder.decode(chunk).match(/event: message/g) ?? []).length;
  })().catch((e) => {
    if (!abort.signal.aborted) throw e;
  });
  return state;
}

/** Long-polls `topic` in a loop until stopped. */
function pollLoop(baseUrl, topic) {
  const abort = new AbortController();
  const state = { messages: 0, stop: () => abort.abort() };
  state.done = (async () => {
    let cursor = '';
    while (!abort.signal.aborted) {
      const q = `topic=${encodeURIComponent(topic)}&timeout_ms=5000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const res = await fetch(`${baseUrl}/v1/poll?${q}`, { signal: abort.signal });
      const body = await res.json();
      assert.equal(res.status, 200, JSON.stringify(body));
      cursor = body.cursor;
      state.messages += body.messages.length;
    }
  })().catch((e) => {
    if (!abort.signal.aborted) throw e;
  });
  return state;
}

test('the dashboard follows live traffic', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  // Frequent SSE heartbeats, so that closed SSE subscribers are noticed
  // (at the next write) within a second or two.
  const config = join(tempDir('herald-dash-'), 'herald.toml');
  writeFileSync(config, '[transport]\nsse_heartbeat = "500ms"\n');
  const herald = await startHerald({ args: ['--config', config] });
  // Cleanup in order: clients first, then herald.
  const cleanups = [];
  t.after(async () => {
    for (const f of cleanups.reverse()) await f().catch(() => {});
    await herald.kill();
  });
  const { page, problems, requests } = await openDashboard(herald.url);
  cleanups.push(() => page.close());

  // Live, with this node listed and nothing going on yet.
  await page.waitForFunction(() => document.querySelector('[data-testid="stream-status"]').dataset.value === 'live', null, {
    timeout: WAIT_MS,
  });
  const nodeId = await page.textContent('[data-testid="node-id"]');
  const stats = await (await fetch(`${herald.url}/v1/stats`)).json();
  assert.equal(nodeId, stats.node);
  assert.equal(await page.getAttribute('[data-testid="node-row"]', 'data-node-id'), stats.node);
  assert.equal(await page.getAttribute('[data-testid="ready"]', 'data-value'), 'true');
  // The dashboard's own stream is not a subscriber.
  for (const id of ['conn-ws', 'conn-sse', 'conn-poll', 'subscriptions', 'published-total']) {
    assert.equal(await value(page, id), 0, id);
  }
  const before = await chart(page, 'publish');

  // Subscribers: 2 WebSockets from another tab, 3 SSE streams and a long-poll loop from node.
  const wsTab = await (await browser()).newPage();
  cleanups.push(() => wsTab.close());
  await wsTab.goto(`${herald.url}/healthz`);
  await wsTab.evaluate(async (wsUrl) => {
    window.received = 0;
    const open = () =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(wsUrl);
        ws.onopen = () => ws.send(JSON.stringify({ op: 'subscribe', id: 's', topic: 'load.*' }));
        ws.onmessage = (e) => {
          const f = JSON.parse(e.data);
          if (f.type === 'subscribed') resolve();
          if (f.type === 'message') window.received++;
        };
        ws.onerror = () => reject(new Error('ws error'));
      });
    await Promise.all([open(), open()]);
  }, `${herald.url.replace('http', 'ws')}/v1/ws`);
  const sse = [1, 2, 3].map(() => sseSubscriber(herald.url, 'load.>'));
  const poller = pollLoop(herald.url, 'load.a');
  cleanups.push(async () => {
    for (const s of sse) s.abort();
    poller.stop();
    await Promise.allSettled([...sse.map((s) => s.done), poller.done]);
  });

  await waitValue(page, 'conn-ws', '===', 2);
  await waitValue(page, 'conn-sse', '===', 3);
  await waitValue(page, 'conn-poll', '>=', 1);
  await waitValue(page, 'subscriptions', '>=', 5);

  // A burst of REST publishes over ~3 s on two topics.
  const N = 300;
  for (let i = 0; i < N; i += 10) {
    await Promise.all(
      Array.from({ length: 10 }, (_, j) => publish(herald.url, (i + j) % 2 ? 'load.a' : 'load.b', { i: i + j })),
    );
    await sleep(100);
  }
  await waitValue(page, 'published-total', '===', N);
  await waitValue(page, 'topics', '===', 2);
  // Every subscriber got every message: 2 ws × N + 3 sse × N (+ poll on load.a).
  await waitValue(page, 'delivered-total', '>=', 5 * N);
  assert.ok((await value(page, 'delivered-ws')) >= 2 * N);
  assert.ok((await value(page, 'delivered-sse')) >= 3 * N);
  assert.equal(await page.textContent('[data-testid="published-total"]'), N.toLocaleString('en-US'));

  // The busiest topics: both, with their last seq and this node's subscribers.
  await page.waitForFunction(
    (n) =>
      ['load.a', 'load.b'].every((t) => {
        const row = document.querySelector(`[data-testid="topic-row"][data-topic="${t}"]`);
        return row && Number(row.dataset.lastSeq) === n && Number(row.dataset.subscribers) >= 5;
      }),
    N / 2,
    { timeout: WAIT_MS, polling: 50 },
  );

  mkdirSync(ARTIFACTS, { recursive: true });
  const shot = join(ARTIFACTS, 'dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`dashboard screenshot: ${shot}`);

  // The charts moved: more points, a different path, a y scale above the idle one.
  const during = await chart(page, 'publish');
  assert.ok(during.points > before.points, `points ${before.points} → ${during.points}`);
  assert.notEqual(during.d, before.d);
  assert.ok(during.max >= 10, `publish chart max ${during.max}`);
  const series = await page.evaluate(() => window.heraldDashboard.series.publish.map((p) => p.v));
  assert.ok(Math.max(...series) > 10, `publish rates ${series.map((v) => v.toFixed(1))}`);
  const delivery = await chart(page, 'delivery');
  assert.ok(delivery.max > during.max, `delivery max ${delivery.max} vs publish max ${during.max}`);
  // Rates settle back to 0 once publishing stops, and the path keeps changing.
  await waitValue(page, 'publish-rate', '===', 0);
  await page.waitForFunction(
    (n) => Number(document.querySelector('[data-testid="chart-publish"]').dataset.points) > n,
    during.points,
    { timeout: WAIT_MS, polling: 50 },
  );
  const later = await chart(page, 'publish');
  assert.notEqual(later.d, during.d);


  // Subscribers leaving show too.
  for (const s of sse) s.abort();
  await waitValue(page, 'conn-sse', '===', 0);

  const origin = new URL(herald.url).origin;
  const foreign = requests.filter((u) => new URL(u).origin !== origin);
  assert.deepEqual(foreign, [], 'the page only talks to herald');
  assert.deepEqual(problems, []);
});

test('with auth on the dashboard asks for a key', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const herald = await startHerald({ args: ['--api-key', 'dash-key-1'] });
  t.after(() => herald.kill());
  const { page, problems } = await openDashboard(herald.url);
  t.after(() => page.close());
  await page.waitForSelector('[data-testid="auth-form"]', { state: 'visible', timeout: WAIT_MS });
  assert.equal(await page.getAttribute('[data-testid="stream-status"]', 'data-value'), 'unauthorized');
  assert.match(await page.textContent('[data-testid="auth-message"]'), /Credentials required/);

  await page.fill('[data-testid="auth-token"]', 'dash-key-1');
  await page.click('[data-testid="auth-form"] button');
  await page.waitForFunction(() => document.querySelector('[data-testid="stream-status"]').dataset.value === 'live', null, {
    timeout: WAIT_MS,
  });
  assert.equal(await page.isVisible('[data-testid="auth"]'), false);
  const { seq } = await publish(herald.url, 'secure.x', 1).catch((e) => ({ seq: e.status }));
  // REST publish without the key is refused; publish with it from node instead.
  assert.equal(seq, 401);
  const res = await fetch(`${herald.url}/v1/topics/secure.x/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': 'dash-key-1' },
    body: '1',
  });
  assert.equal(res.status, 200);
  await waitValue(page, 'published-total', '===', 1);
  assert.deepEqual(problems, []);
});
