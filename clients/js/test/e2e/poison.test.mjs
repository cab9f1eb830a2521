// Issue 21 (D2): the deepest payload the broker accepts (limits.max_json_depth
// at its hard maximum, 100 levels) reaches a subscriber intact on every
// transport the Node client has - WebSocket, SSE (read with fetch) and
// long-poll - and one more level is refused with bad_request. (Browsers'
// EventSource is covered by browser.test.mjs.)

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import WebSocket from 'ws';
import { HeraldClient } from '../../dist/index.js';
import { startHerald, tempDir, waitFor } from '../lib/herald.mjs';

const HARD_MAX = 100;
const nested = (depth) => {
  let v = 'core';
  for (let i = 0; i < depth; i++) v = [v];
  return v;
};

const cleanup = [];
after(() => cleanup.forEach((f) => f()));

test('the deepest accepted message arrives on every transport', async () => {
  const dir = tempDir('herald-js-deep-');
  const config = join(dir, 'herald.toml');
  writeFileSync(config, `[limits]\nmax_json_depth = ${HARD_MAX}\n`);
  const herald = await startHerald({ args: ['--config', config] });
  cleanup.push(() => herald.kill());
  for (const transport of ['ws', 'sse', 'poll']) {
    const client = new HeraldClient({ url: herald.url, WebSocket, transports: [transport], upgradeIntervalMs: 0, pollTimeoutMs: 2_000 });
    cleanup.push(() => client.close());
    const errors = [];
    client.on('error', (e) => errors.push(`${e.code} ${e.message}`));
    const topic = `deep.${transport}`;
    await client.publish(topic, nested(HARD_MAX));
    await assert.rejects(client.publish(topic, nested(HARD_MAX + 1)), (e) => e.code === 'bad_request');
    const got = [];
    const sub = client.subscribe(topic, (m) => got.push(m), { since: 0 });
    await sub.ready;
    assert.equal(client.transport, transport);
    await waitFor(() => got.length >= 1, { describe: () => `${transport}: ${JSON.stringify(errors)}` });
    assert.equal(got.length, 1);
    assert.deepEqual([got[0].topic, got[0].seq], [topic, 1]);
    assert.deepEqual(got[0].data, nested(HARD_MAX));
    assert.deepEqual(errors, []);
    client.close();
  }
});
