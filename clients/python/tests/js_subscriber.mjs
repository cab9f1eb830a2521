// The JavaScript client as a child process of the Python tests:
//   node js_subscriber.mjs URL PATTERN
// subscribes to PATTERN from the start (cursor `1~0`: everything retained)
// through URL and prints `ready` once subscribed, then one JSON line per
// message ({"topic","seq","data"}) and per gap ({"gap": {...}}).
// Connection changes go to stderr. Runs until stdin closes.
// Needs clients/js built (`npm ci && npm run build` there).

import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const js = join(dirname(fileURLToPath(import.meta.url)), '../../js');
const WebSocket = createRequire(join(js, 'package.json'))('ws');
const { HeraldClient } = await import(pathToFileURL(join(js, 'dist/index.js')).href);

const [url, pattern] = process.argv.slice(2);
const client = new HeraldClient({
  url,
  WebSocket,
  reconnect: { minDelayMs: 50, maxDelayMs: 500 },
  openTimeoutMs: 2_000,
});
client.on('connect', (e) => console.error(`connect ${e.transport} ${e.url}`));
client.on('disconnect', (e) => console.error(`disconnect ${e.url} ${e.reason ?? ''}`));
client.on('gap', (g) => console.log(JSON.stringify({ gap: { topic: g.topic, from: g.from, to: g.to } })));
client.on('error', (e) => console.error(`error ${e.code ?? ''} ${e.message}`));
const sub = client.subscribe(pattern, (m) => console.log(JSON.stringify({ topic: m.topic, seq: m.seq, data: m.data })), {
  cursor: '1~0',
});
await sub.ready;
console.log('ready');
process.stdin.resume();
process.stdin.on('end', () => {
  client.close();
  process.exit(0);
});
