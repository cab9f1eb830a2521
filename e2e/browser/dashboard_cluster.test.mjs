// The dashboard of a 3-node cluster in real headless Chromium: one real
// nats-server, three herald nodes (n1..n3), one /dashboard page per node.
//
// A WebSocket subscriber (in a browser tab) on n3 and one on n2, then
// publishes through n1 only. Every page — including those of the nodes that
// neither own the topics nor received the publishes — must show the
// cluster's published count, the delivered count of the subscribers on the
// other nodes, all three nodes with their own numbers (which add up to the
// totals), and the topic rows with their last seq and the cluster's
// subscribers. The charts have a time axis and a readable size. Screenshots:
// e2e/browser/artifacts/dashboard-cluster-n{1,2,3}.png.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { launchChromium, publish, sleep, startCluster, startNats } from './lib/herald.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = join(HERE, 'artifacts');
const TEST_TIMEOUT_MS = 90_000;
const WAIT_MS = 20_000;

let contextPromise;
const browser = () => (contextPromise ??= launchChromium());
after(async () => {
  if (contextPromise) await (await contextPromise.catch(() => null))?.close();
});

/** Waits until `fn(arg)` is truthy in the page; the error names `what`. */
async function until(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 100 });
  } catch (e) {
    const last = await page.evaluate(() => JSON.stringify(window.heraldDashboard?.last ?? null)).catch(() => '?');
    throw new Error(`${what}; last snapshot: ${last}`, { cause: e });
  }
}

const dataValue = (page, id) => page.$eval(`[data-testid="${id}"]`, (e) => Number(e.dataset.value));

test('every node of a cluster shows a publish made through one node', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const nats = await startNats();
  const cleanups = [];
  t.after(async () => {
    for (const f of cleanups.reverse()) await f().catch(() => {});
    await nats.stop();
  });
  const nodes = await startCluster(nats.url, 3);
  cleanups.push(() => Promise.all(nodes.map((n) => n.kill())));
  const [a, b, c] = nodes;

  // One page per node.
  const context = await browser();
  const pages = [];
  for (const node of nodes) {
    const page = await context.newPage();
    const problems = [];
    const requests = [];
    page.on('pageerror', (e) => problems.push(`pageerror: ${e}`));
    page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
    page.on('request', (r) => requests.push(r.url()));
    await page.setViewportSize({ width: 1400, height: 1000 });
    await page.goto(`${node.url}/dashboard?interval_ms=250`);
    cleanups.push(() => page.close());
    pages.push({ node, page, problems, requests });
  }
  for (const { page } of pages) {
    await until(page, 'stream never live', () => document.querySelector('[data-testid="stream-status"]').dataset.value === 'live');
    // All three nodes report their numbers.
    await until(page, 'not all 3 nodes reporting', () => Number(document.querySelector('[data-testid="cluster-mode"]').dataset.value) === 3);
  }

  // Subscribers on n3 (orders.>) and n2 (orders.eu), from a browser tab each.
  const subscribe = async (node, pattern) => {
    const tab = await context.newPage();
    cleanups.push(() => tab.close());
    await tab.goto(`${node.url}/healthz`);
    await tab.evaluate(
      ([wsUrl, pattern]) =>
        new Promise((resolve, reject) => {
          window.received = 0;
          const ws = new WebSocket(wsUrl);
          ws.onopen = () => ws.send(JSON.stringify({ op: 'subscribe', id: 's', topic: pattern }));
          ws.onmessage = (e) => {
            const f = JSON.parse(e.data);
            if (f.type === 'subscribed') resolve();
            if (f.type === 'message') window.received++;
          };
          ws.onerror = () => reject(new Error('ws error'));
        }),
      [`${node.url.replace('http', 'ws')}/v1/ws`, pattern],
    );
    return tab;
  };
  const onC = await subscribe(c, 'orders.>');
  const onB = await subscribe(b, 'orders.eu');

  // Publishes through n1 only: 40 on orders.eu, 20 on orders.us, over ~2 s.
  const EU = 40;
  const US = 20;
  for (let i = 0; i < EU + US; i += 10) {
    await Promise.all(
      Array.from({ length: 10 }, (_, j) => publish(a.url, i + j < EU ? 'orders.eu' : 'orders.us', { i: i + j })),
    );
    await sleep(300);
  }
  await onC.waitForFunction((n) => window.received === n, EU + US, { timeout: WAIT_MS });
  await onB.waitForFunction((n) => window.received === n, EU, { timeout: WAIT_MS });
  const DELIVERED = EU + US + EU;

  mkdirSync(ARTIFACTS, { recursive: true });
  for (const { node, page, problems, requests } of pages) {
    const who = new URL(node.url).port;
    // Cluster totals: published counts every publish once, wherever it went.
    await until(page, `${who}: published-total never ${EU + US}`, (n) => Number(document.querySelector('[data-testid="published-total"]').dataset.value) === n, EU + US);
    await until(page, `${who}: delivered-total never ${DELIVERED}`, (n) => Number(document.querySelector('[data-testid="delivered-total"]').dataset.value) === n, DELIVERED);
    assert.equal(await page.textContent('[data-testid="published-total"]'), (EU + US).toLocaleString('en-US'));
    assert.equal(await dataValue(page, 'conn-ws'), 2);
    assert.equal(await dataValue(page, 'subscriptions'), 2);
    // Topic rows: last seq and subscribers over the cluster (orders.eu has one on n2 and one on n3).
    await until(
      page,
      `${who}: no orders.eu row with seq ${EU} and 2 subscribers`,
      (n) => {
        const row = document.querySelector('[data-testid="topic-row"][data-topic="orders.eu"]');
        return row && Number(row.dataset.lastSeq) === n && Number(row.dataset.subscribers) === 2;
      },
      EU,
    );
    await until(
      page,
      `${who}: no orders.us row with seq ${US} and 1 subscriber`,
      (n) => {
        const row = document.querySelector('[data-testid="topic-row"][data-topic="orders.us"]');
        return row && Number(row.dataset.lastSeq) === n && Number(row.dataset.subscribers) === 1;
      },
      US,
    );
    // Every node listed with its own numbers, which add up to the totals.
    const rows = await page.$$eval('[data-testid="node-row"]', (rs) =>
      rs.map((r) => ({ id: r.dataset.nodeId, published: Number(r.dataset.published) })),
    );
    assert.deepEqual(rows.map((r) => r.id).sort(), ['n1', 'n2', 'n3']);
    assert.equal(rows.reduce((s, r) => s + r.published, 0), EU + US, JSON.stringify(rows));
    // The publish rate was seen cluster-wide, on every page.
    const peak = await page.evaluate(() => Math.max(...window.heraldDashboard.series.publish.map((p) => p.v)));
    assert.ok(peak > 5, `${who}: publish rate peak ${peak}`);

    // Charts: a readable size and a labelled time axis.
    const box = await page.$eval('[data-testid="chart-publish"]', (svg) => {
      const r = svg.getBoundingClientRect();
      return { w: r.width, h: r.height, ticks: Number(svg.dataset.ticks), labels: svg.querySelectorAll('text.x').length };
    });
    assert.ok(box.h >= 180 && box.w >= 400, `chart is ${box.w}×${box.h}`);
    assert.ok(box.ticks >= 2 && box.labels >= 2, `time axis: ${JSON.stringify(box)}`);
    const label = await page.textContent('[data-testid="chart-publish"] text.x');
    assert.match(label, /^\d\d:\d\d:\d\d$/);

    const shot = join(ARTIFACTS, `dashboard-cluster-${await page.textContent('[data-testid="node-id"]')}.png`);
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`dashboard screenshot: ${shot}`);
    const origin = new URL(node.url).origin;
    assert.deepEqual(requests.filter((u) => new URL(u).origin !== origin), [], 'the page only talks to its node');
    assert.deepEqual(problems, []);
  }
});
