// Runs every test of the package: unit tests (no server), then the end-to-end
// tests against real herald processes (Node client, headless Chromium, a NATS
// cluster). Prerequisites are checked first; a missing one is a failure with
// instructions, never a skip. Exit code: non-zero on any failure.
//
//   node test/run.mjs              unit + e2e
//   node test/run.mjs --unit-only
//   node test/run.mjs --e2e-only
//
// Env: HERALD_BIN (default ../../target/debug/herald, relative to clients/js),
// NATS_SERVER_BIN (default /usr/sbin/nats-server).

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHROMIUM_PATH, DIST, HERALD_BIN, NATS_SERVER_PATH } from './lib/herald.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const args = new Set(process.argv.slice(2));
const unit = !args.has('--e2e-only');
const e2e = !args.has('--unit-only');

const problems = [];
if (!existsSync(join(DIST, 'index.js')) || !existsSync(join(DIST, 'herald.min.js'))) {
  problems.push(`the package is not built (${DIST}): run \`npm run build\``);
}
if (e2e) {
  if (!existsSync(HERALD_BIN)) {
    problems.push(`herald binary not found at ${HERALD_BIN}: run \`cargo build -p herald\` in the repository root, or set HERALD_BIN`);
  }
  if (!existsSync(CHROMIUM_PATH)) {
    problems.push(`${CHROMIUM_PATH} not found: \`apt-get update && apt-get install -y chromium\``);
  }
  if (!existsSync(NATS_SERVER_PATH)) {
    problems.push(`${NATS_SERVER_PATH} not found: \`apt-get update && apt-get install -y nats-server\` (or set NATS_SERVER_BIN)`);
  }
}
if (problems.length) {
  console.error('clients/js tests cannot run:\n' + problems.map((p) => `  - ${p}`).join('\n'));
  process.exit(2);
}

const files = (dir) =>
  readdirSync(join(here, dir))
    .filter((f) => f.endsWith('.test.mjs'))
    .sort()
    .map((f) => join(here, dir, f));
const list = [...(unit ? files('unit') : []), ...(e2e ? files('e2e') : [])];
if (e2e) console.log(`herald: ${HERALD_BIN}`);
const started = Date.now();
// One file at a time: the e2e files start servers and a browser each.
// A hard bound on the whole run, so a hang fails instead of blocking CI.
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...list], {
  stdio: 'inherit',
  timeout: 300_000,
  killSignal: 'SIGKILL',
});
if (r.error) console.error(`test run failed: ${r.error.message}`);
console.log(`clients/js tests finished in ${((Date.now() - started) / 1000).toFixed(1)} s (exit ${r.status ?? r.signal})`);
process.exit(r.status ?? 1);
