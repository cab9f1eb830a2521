// Helpers for Herald end-to-end tests in a real browser.
//
// * startHerald / Herald#kill (SIGKILL) / Herald#stop (SIGTERM): run the
//   server binary on a fresh temp data dir (or a given one, for restarts) and
//   on port 0 (or a fixed port, for restarts on the same address).
// * publish: REST publish, returns the broker's ack ({topic, seq}).
// * startCutProxy: a TCP proxy in front of herald whose live connections can
//   be cut on demand (a network drop while the server stays up).
// * servePage: a node:http server on 127.0.0.1 for the test page (another
//   origin than herald, so CORS is exercised as in a real deployment).
// * launchChromium: headless Chromium through playwright-core, launched the
//   way shared/TOOLS.md says. Missing Chromium is a hard failure, never a skip.
// * startNats / startCluster / waitReady: a real nats-server and herald
//   nodes joined through it (missing nats-server is a hard failure too).

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
/** Repository root (this file is e2e/browser/lib/herald.mjs). */
export const REPO_ROOT = resolve(HERE, '../../..');
/** Server binary: $HERALD_BIN, else target/debug/herald in the repo. */
export const HERALD_BIN = process.env.HERALD_BIN
  ? resolve(process.env.HERALD_BIN)
  : join(REPO_ROOT, 'target/debug/herald');
export const CHROMIUM_PATH = '/usr/bin/chromium';
export const ARTIFACTS_DIR = join(REPO_ROOT, '.artifacts');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const ANSI = /\x1b\[[0-9;]*m/g;
const live = new Set(); // every herald child still running, killed on exit
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/** A fresh empty temp dir, removed at process exit. */
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

/** A running herald process. */
export class Herald {
  constructor(child, dataDir) {
    this.child = child;
    this.dataDir = dataDir;
    this.addr = null;
    this.port = null;
    this.url = null;
    this.log = '';
    this.exited = new Promise((res) => {
      child.once('exit', (code, signal) => {
        live.delete(child);
        res({ code, signal });
      });
    });
  }

  get running() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGKILL, resolves once the process is gone (so its data dir is free). */
  async kill() {
    if (this.running) this.child.kill('SIGKILL');
    return this.exited;
  }

  /** SIGTERM (graceful drain); SIGKILL after `graceMs`. */
  async stop(graceMs = 10_000) {
    if (!this.running) return this.exited;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.running && this.child.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

function spawnOnce({ port, dataDir, args, timeoutMs }) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(
      HERALD_BIN,
      ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...args],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, NO_COLOR: '1', HERALD_LOG_FORMAT: 'text' },
      },
    );
    live.add(child);
    const herald = new Herald(child, dataDir);
    let settled = false;
    const done = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        if (herald.running) child.kill('SIGKILL');
        reject(err);
      } else {
        resolvePromise(herald);
      }
    };
    const timer = setTimeout(
      () => done(new Error(`herald printed no ready line within ${timeoutMs} ms; output:\n${herald.log}`)),
      timeoutMs,
    );
    const keep = (chunk) => {
      herald.log += chunk.toString('utf8').replace(ANSI, '');
      if (herald.log.length > 200_000) herald.log = herald.log.slice(-100_000);
    };
    // The address comes from the ready line on stdout (protocol-spec
    // §15.7), read apart from stderr so no log chunk can cut into it.
    let stdout = '';
    child.stderr.on('data', keep);
    child.stdout.on('data', (chunk) => {
      keep(chunk);
      if (herald.addr) return;
      stdout += chunk.toString('utf8');
      const ready = readyLine(stdout);
      if (ready) {
        herald.addr = ready.addr;
        herald.port = Number(ready.addr.slice(ready.addr.lastIndexOf(':') + 1));
        herald.url = ready.listening;
        done();
      }
    });
    child.once('error', (e) => done(new Error(`cannot run herald at ${HERALD_BIN}: ${e.message}`)));
    child.once('exit', (code, signal) =>
      done(
        Object.assign(
          new Error(`herald exited (code ${code}, signal ${signal}) before listening; output:\n${herald.log}`),
          { heraldLog: herald.log },
        ),
      ),
    );
  });
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

/**
 * Starts `herald serve`.
 * @param {object} [opts]
 * @param {number} [opts.port=0] fixed port (restarts) or 0 for a free one
 * @param {string} [opts.dataDir] existing data dir (restarts); default a fresh temp dir
 * @param {string[]} [opts.args] extra flags
 * @param {number} [opts.timeoutMs=15000] how long to wait for the ready line
 * @param {number} [opts.retryMs=10000] on a fixed port, how long to retry "port in use"
 */
export async function startHerald({ port = 0, dataDir, args = [], timeoutMs = 15_000, retryMs = 10_000 } = {}) {
  if (!existsSync(HERALD_BIN)) {
    throw new Error(
      `herald binary not found at ${HERALD_BIN}: build it with \`cargo build -p herald\` in ${REPO_ROOT} or set HERALD_BIN`,
    );
  }
  dataDir ??= join(tempDir('herald-e2e-'), 'data');
  const deadline = Date.now() + retryMs;
  for (;;) {
    try {
      return await spawnOnce({ port, dataDir, args, timeoutMs });
    } catch (e) {
      const inUse = /in use|cannot listen/i.test(e.heraldLog ?? '');
      if (!(port !== 0 && inUse && Date.now() < deadline)) throw e;
      await sleep(100);
    }
  }
}

/**
 * Publishes `data` to `topic` over REST. Resolves to the ack `{topic, seq}`;
 * rejects on a network error or a non-200 answer.
 */
export async function publish(baseUrl, topic, data, { timeoutMs = 5_000 } = {}) {
  const res = await fetch(`${baseUrl}/v1/topics/${topic}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(data),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  if (res.status !== 200) {
    throw Object.assign(new Error(`publish to ${topic}: HTTP ${res.status} ${text}`), { status: res.status });
  }
  return JSON.parse(text);
}

/**
 * A TCP proxy on 127.0.0.1 forwarding to `target` ("host:port").
 * `cut()` drops every live connection (RST towards the client, close towards
 * herald) while the proxy keeps accepting new ones.
 */
export async function startCutProxy(target) {
  const [host, portText] = target.split(':');
  const pairs = new Set();
  const state = { connections: 0, cuts: 0 };
  const requests = []; // request heads seen, in order (for header checks)
  const server = createTcpServer((client) => {
    state.connections += 1;
    let head = '';
    const sniff = (chunk) => {
      head += chunk.toString('latin1');
      let end;
      while ((end = head.indexOf('\r\n\r\n')) !== -1) {
        requests.push(parseHead(head.slice(0, end)));
        head = head.slice(end + 4);
      }
      if (head.length > 16_384) client.off('data', sniff);
    };
    client.on('data', sniff);
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
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get connections() {
      return state.connections;
    },
    get cuts() {
      return state.cuts;
    },
    get live() {
      return pairs.size;
    },
    /** Request heads seen so far: `{method, target, headers}` (lower-case names). */
    get requests() {
      return requests;
    },
    /** Drops every live connection; returns how many were cut. */
    cut() {
      const n = pairs.size;
      for (const { client, upstream } of [...pairs]) {
        // RST like a dropped link. Not on a socket already ending: libuv
        // refuses to reset a handle with a pending shutdown and Node then
        // never closes it, which hangs process exit.
        if (!client.destroyed && !client.writableEnded) client.resetAndDestroy();
        else client.destroy();
        upstream.destroy();
      }
      pairs.clear();
      state.cuts += 1;
      return n;
    },
    async close() {
      this.cut();
      await new Promise((res) => server.close(() => res()));
    },
  };
}

function parseHead(text) {
  const [requestLine, ...lines] = text.split('\r\n');
  const [method, target] = requestLine.split(' ');
  const headers = {};
  for (const line of lines) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { method, target, headers };
}

/** Serves `html` at `/` from a node:http server on 127.0.0.1:<free port>. */
export async function servePage(html) {
  const server = createHttpServer((req, res) => {
    if (req.url === '/' || req.url.startsWith('/?')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(html);
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

/**
 * Headless Chromium as a persistent context on a new empty profile dir,
 * launched exactly as shared/TOOLS.md says. Throws (never skips) when
 * /usr/bin/chromium is missing.
 */
export async function launchChromium() {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `Chromium is required for the browser e2e tests but ${CHROMIUM_PATH} does not exist. ` +
        'Install it with `apt-get update && apt-get install -y chromium` (as root).',
    );
  }
  const { chromium } = await import('playwright-core');
  const profile = tempDir('herald-chromium-');
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

export const NATS_SERVER_PATH = process.env.NATS_SERVER_BIN || '/usr/sbin/nats-server';

/**
 * Starts a real `nats-server` on a loopback port the kernel picks; resolves
 * once it listens. The port is read from the server's own ports file (named
 * after its pid), never guessed: a port picked by binding and releasing can
 * be picked by another process too. Missing nats-server is a hard failure,
 * never a skip. Returns `{url, stop()}`.
 */
export async function startNats({ timeoutMs = 10_000 } = {}) {
  if (!existsSync(NATS_SERVER_PATH)) {
    throw new Error(
      `nats-server is required for the cluster tests but ${NATS_SERVER_PATH} does not exist: ` +
        '`apt-get update && apt-get install -y nats-server` (or set NATS_SERVER_BIN)',
    );
  }
  const dir = mkdtempSync(join(tmpdir(), 'herald-nats-'));
  const child = spawn(NATS_SERVER_PATH, ['-a', '127.0.0.1', '-p', '-1', '--ports_file_dir', dir], {
    stdio: 'ignore',
  });
  live.add(child);
  const exited = new Promise((res) =>
    child.once('exit', () => {
      live.delete(child);
      rmSync(dir, { recursive: true, force: true });
      res();
    }),
  );
  const ports = join(dir, `${basename(NATS_SERVER_PATH)}_${child.pid}.ports`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let url;
    try {
      url = JSON.parse(readFileSync(ports, 'utf8')).nats[0];
    } catch {
      url = undefined;
    }
    if (url) {
      return {
        url,
        async stop() {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
          await exited;
        },
      };
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('nats-server did not start listening');
    }
    await sleep(50);
  }
}

/** Polls `GET {baseUrl}/readyz` until 200 (rejects after `timeoutMs`). */
export async function waitReady(herald, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await fetch(`${herald.url}/readyz`)
      .then((r) => r.status === 200)
      .catch(() => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${herald.url} not ready in ${timeoutMs} ms; log:\n${herald.log}`);
    await sleep(100);
  }
}

/**
 * Starts `n` herald nodes (n1..nN) joined through the NATS at `natsUrl` and
 * waits until each is ready and sees all `n` members.
 */
export async function startCluster(natsUrl, n, { args = [] } = {}) {
  const nodes = [];
  for (let i = 1; i <= n; i++) {
    nodes.push(await startHerald({ args: ['--nats', natsUrl, '--node-id', `n${i}`, ...args] }));
  }
  for (const node of nodes) {
    await waitReady(node);
    const deadline = Date.now() + 20_000;
    for (;;) {
      const stats = await (await fetch(`${node.url}/v1/stats`)).json();
      if (stats.nodes.length === n) break;
      if (Date.now() > deadline) throw new Error(`${node.url} sees ${stats.nodes.length} of ${n} members`);
      await sleep(100);
    }
  }
  return nodes;
}
