// Helpers for the client's end-to-end tests against real herald processes
// (ideas taken from e2e/browser/lib/herald.mjs): start / SIGKILL / restart
// herald, a NATS server and a 3-node cluster, REST publishing with retries,
// a cuttable TCP proxy, a page server for the browser bundle, and headless
// Chromium launched exactly as shared/TOOLS.md says.
//
// A missing tool (herald binary, Chromium, nats-server) is a hard failure
// with a message saying how to get it, never a skip.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
/** clients/js */
export const PACKAGE_ROOT = resolve(HERE, '../..');
export const DIST = join(PACKAGE_ROOT, 'dist');
/** Server binary: $HERALD_BIN (relative to clients/js), else ../../target/debug/herald. */
export const HERALD_BIN = resolve(PACKAGE_ROOT, process.env.HERALD_BIN ?? '../../target/debug/herald');
export const CHROMIUM_PATH = '/usr/bin/chromium';
export const NATS_SERVER_PATH = process.env.NATS_SERVER_BIN ?? '/usr/sbin/nats-server';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const ANSI = /\x1b\[[0-9;]*m/g;
const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/** A fresh temp dir, removed at exit. */
export function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  process.on('exit', () => {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  });
  return dir;
}

export function requireHerald() {
  if (!existsSync(HERALD_BIN)) {
    throw new Error(
      `herald binary not found at ${HERALD_BIN}: run \`cargo build -p herald\` in the repository root or set HERALD_BIN`,
    );
  }
}

/** A child process with its output kept for error messages. */
class Proc {
  constructor(child, name) {
    this.child = child;
    this.name = name;
    this.log = '';
    children.add(child);
    this.exited = new Promise((res) => {
      child.once('exit', (code, signal) => {
        children.delete(child);
        res({ code, signal });
      });
    });
    const onData = (chunk) => {
      this.log += chunk.toString('utf8').replace(ANSI, '');
      if (this.log.length > 400_000) this.log = this.log.slice(-200_000);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
  }

  get running() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGKILL; resolves once the process is gone. */
  async kill() {
    if (this.running) this.child.kill('SIGKILL');
    return this.exited;
  }

  /** SIGTERM, then SIGKILL after graceMs. */
  async stop(graceMs = 5_000) {
    if (!this.running) return this.exited;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.running && this.child.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(t);
    }
  }
}

/** A running `herald serve`. */
export class Herald extends Proc {
  constructor(child, opts) {
    super(child, opts.nodeId ?? 'herald');
    this.opts = opts;
    this.dataDir = opts.dataDir;
    this.addr = null;
    this.port = null;
    this.url = null;
  }

  /** A new process on the same port and data dir (after kill/stop). */
  restart(extra = {}) {
    return startHerald({ ...this.opts, port: this.port, ...extra });
  }
}

/**
 * The ready line `herald serve` prints on stdout once it serves, parsed:
 * `{"listening":"http://127.0.0.1:PORT","addr":"127.0.0.1:PORT","node":...}`;
 * null until a whole one is in `text`.
 */
export function readyLine(text) {
  for (const line of text.split('\n')) {
    if (!line.startsWith('{') || !line.includes('"listening"')) continue;
    try {
      const ready = JSON.parse(line);
      if (typeof ready.listening === 'string') return ready;
    } catch {
      // not all written yet
    }
  }
  return null;
}

function spawnHerald(opts) {
  const { port, dataDir, args, timeoutMs, nats, nodeId } = opts;
  const argv = ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir];
  if (nats) argv.push('--nats', nats);
  if (nodeId) argv.push('--node-id', nodeId);
  argv.push(...args);
  return new Promise((resolvePromise, reject) => {
    const child = spawn(HERALD_BIN, argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1', HERALD_LOG_FORMAT: 'text' },
    });
    const h = new Herald(child, opts);
    let settled = false;
    const done = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        if (h.running) child.kill('SIGKILL');
        reject(err);
      } else resolvePromise(h);
    };
    const timer = setTimeout(
      () => done(new Error(`herald printed no ready line within ${timeoutMs} ms; output:\n${h.log}`)),
      timeoutMs,
    );
    // The address comes from the ready line on stdout (protocol-spec
    // §15.7), read apart from stderr so no log chunk can cut into it.
    let stdout = '';
    child.stdout.on('data', (chunk) => {
      if (h.addr) return;
      stdout += chunk.toString('utf8');
      const ready = readyLine(stdout);
      if (ready) {
        h.addr = ready.addr;
        h.port = Number(ready.addr.slice(ready.addr.lastIndexOf(':') + 1));
        h.url = ready.listening;
        done();
      }
    });
    child.once('error', (e) => done(new Error(`cannot run herald at ${HERALD_BIN}: ${e.message}`)));
    child.once('exit', (code, signal) =>
      done(Object.assign(new Error(`herald exited (code ${code}, signal ${signal}) before listening:\n${h.log}`), { heraldLog: h.log })),
    );
  });
}

/**
 * Starts `herald serve` on 127.0.0.1:<port> (0 = free port) with a data dir
 * (default: a fresh one). Retries "port in use" on a fixed port for a while
 * (restarts right after a kill).
 */
export async function startHerald({ port = 0, dataDir, args = [], timeoutMs = 15_000, nats, nodeId, waitReady = true } = {}) {
  requireHerald();
  dataDir ??= join(tempDir('herald-js-'), 'data');
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const h = await spawnHerald({ port, dataDir, args, timeoutMs, nats, nodeId });
      if (waitReady) await waitReadyz(h.url, 30_000);
      return h;
    } catch (e) {
      const inUse = /in use|cannot listen|address/i.test(e.heraldLog ?? '');
      if (!(port !== 0 && inUse && Date.now() < deadline)) throw e;
      await sleep(100);
    }
  }
}

/** Waits for GET /readyz = 200. */
export async function waitReadyz(url, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2_000) });
      last = `${res.status} ${await res.text()}`;
      if (res.status === 200) return;
    } catch (e) {
      last = String(e);
    }
    await sleep(100);
  }
  throw new Error(`${url}/readyz not 200 within ${timeoutMs} ms (last: ${last})`);
}

/**
 * `nats-server -a 127.0.0.1 -p PORT` (`port` to restart one that was killed;
 * by default one the kernel picks), resolved once it listens. The port is
 * read from the server's own ports file (named after its pid): a port picked
 * by binding and releasing can be picked by another process too, and a
 * connect would then reach that process's server.
 */
export async function startNats({ port = -1 } = {}) {
  if (!existsSync(NATS_SERVER_PATH)) {
    throw new Error(
      `nats-server not found at ${NATS_SERVER_PATH}: install it with \`apt-get update && apt-get install -y nats-server\` (or set NATS_SERVER_BIN)`,
    );
  }
  const dir = mkdtempSync(join(tmpdir(), 'herald-nats-'));
  const child = spawn(NATS_SERVER_PATH, ['-a', '127.0.0.1', '-p', String(port), '--ports_file_dir', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const proc = new Proc(child, 'nats');
  const ports = join(dir, `${basename(NATS_SERVER_PATH)}_${child.pid}.ports`);
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (!proc.running) throw new Error(`nats-server exited:\n${proc.log}`);
    let url;
    try {
      url = JSON.parse(readFileSync(ports, 'utf8')).nats[0];
    } catch {
      url = undefined;
    }
    if (url) {
      proc.port = Number(url.slice(url.lastIndexOf(':') + 1));
      proc.url = `nats://127.0.0.1:${proc.port}`;
      return proc;
    }
    if (Date.now() > deadline) throw new Error(`nats-server did not listen on ${port}:\n${proc.log}`);
    await sleep(50);
  }
}

/** A NATS server and `n` herald nodes n1..nN joined through it, all ready. */
export async function startCluster(n = 3) {
  const nats = await startNats();
  const nodes = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      startHerald({ nats: nats.url, nodeId: `n${i + 1}`, waitReady: false }),
    ),
  );
  await Promise.all(nodes.map((h) => waitReadyz(h.url, 45_000)));
  return {
    nats,
    nodes,
    // Nodes and NATS as they are then (a test may restart either).
    async close() {
      await Promise.all(this.nodes.map((h) => h.kill()));
      await this.nats.kill();
    },
  };
}

/**
 * REST publish with an idempotency key, retried (same key) on network
 * errors and 5xx until `deadlineMs`, rotating over `urls`. Resolves to the ack.
 */
export async function publishRetrying(urls, topic, data, { key, deadlineMs = 20_000 } = {}) {
  const list = Array.isArray(urls) ? urls : [urls];
  key ??= `t-${Math.random().toString(36).slice(2)}-${Date.now()}`;
  const deadline = Date.now() + deadlineMs;
  let last = '';
  for (let attempt = 0; ; attempt++) {
    const url = list[attempt % list.length];
    try {
      const res = await fetch(`${url}/v1/topics/${encodeURIComponent(topic)}/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify(data),
        signal: AbortSignal.timeout(5_000),
      });
      const text = await res.text();
      if (res.status === 200) return JSON.parse(text);
      last = `HTTP ${res.status} ${text}`;
      if (res.status < 500) throw new Error(`publish ${topic}: ${last}`);
    } catch (e) {
      if (String(e.message ?? e).startsWith(`publish ${topic}: HTTP 4`)) throw e;
      last = String(e);
    }
    if (Date.now() > deadline) throw new Error(`publish ${topic} not acknowledged within ${deadlineMs} ms: ${last}`);
    await sleep(Math.min(50 * 2 ** Math.min(attempt, 4), 500));
  }
}

/** A TCP proxy to `target` ("host:port") whose live connections can be cut. */
export async function startCutProxy(target) {
  const [host, portText] = target.split(':');
  const pairs = new Set();
  const server = createTcpServer((client) => {
    const upstream = connect({ host, port: Number(portText) });
    const pair = { client, upstream };
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', res);
  });
  const { port } = server.address();
  let cuts = 0;
  return {
    url: `http://127.0.0.1:${port}`,
    get cuts() {
      return cuts;
    },
    get live() {
      return pairs.size;
    },
    /** Drops every live connection (RST to the client). */
    cut() {
      const n = pairs.size;
      for (const { client, upstream } of [...pairs]) {
        if (!client.destroyed && !client.writableEnded) client.resetAndDestroy();
        else client.destroy();
        upstream.destroy();
      }
      pairs.clear();
      cuts++;
      return n;
    },
    async close() {
      this.cut();
      await new Promise((res) => server.close(() => res()));
    },
  };
}

/** Serves `html` at / and the built bundle at /herald.min.js on 127.0.0.1. */
export async function servePage(html) {
  const bundlePath = join(DIST, 'herald.min.js');
  if (!existsSync(bundlePath)) throw new Error(`${bundlePath} missing: run \`npm run build\` first`);
  const server = createHttpServer((req, res) => {
    const path = req.url.split('?')[0];
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(html);
    } else if (path === '/herald.min.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' });
      res.end(readFileSync(bundlePath));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', res);
  });
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () =>
      new Promise((res) => {
        server.closeAllConnections?.();
        server.close(() => res());
      }),
  };
}

/** Headless Chromium launched as shared/TOOLS.md says; throws when missing. */
export async function launchChromium() {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `Chromium is required for the browser tests but ${CHROMIUM_PATH} does not exist. ` +
        'Install it with `apt-get update && apt-get install -y chromium` (as root).',
    );
  }
  const { chromium } = await import('playwright-core');
  const profile = tempDir('herald-js-chromium-');
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Human-readable difference between `seqs` and 1..n. */
export function describeSeqs(seqs, n) {
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

/** Asserts that `seqs` is exactly 1..n in order. */
export function assertExactSequence(seqs, n, label) {
  const ok = seqs.length === n && seqs.every((s, i) => s === i + 1);
  if (!ok) throw new Error(`${label}: ${describeSeqs(seqs, n)}`);
}

/** Groups [{topic, seq}] into topic -> [seq]. */
export function byTopic(msgs) {
  const out = new Map();
  for (const m of msgs) {
    if (!out.has(m.topic)) out.set(m.topic, []);
    out.get(m.topic).push(m.seq);
  }
  return out;
}

/** Polls `fn` until it returns truthy or times out (then throws with `describe()`). */
export async function waitFor(fn, { timeoutMs = 20_000, intervalMs = 50, describe = () => '' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${await describe()}`);
    await sleep(intervalMs);
  }
}
