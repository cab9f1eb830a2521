import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Subscription } from '../../dist/index.js';

const msg = (topic, seq, ts = 1000) => ({ topic, seq, ts, data: null });

test('tracked topics: only seq > last, skips are reported', () => {
  const s = new Subscription(1, 'o.*', () => {});
  s.start(1000, [['o.eu', 5]]);
  assert.equal(s.accept(msg('o.eu', 5)).deliver, false);
  assert.equal(s.accept(msg('o.eu', 4)).deliver, false);
  assert.deepEqual(s.accept(msg('o.eu', 6)), { deliver: true });
  assert.deepEqual(s.accept(msg('o.eu', 9)), { deliver: true, skipped: { from: 7, to: 8 } });
  assert.equal(s.position('o.eu'), 9);
});

test('untracked topics: messages before the floor belong to before the subscription', () => {
  const s = new Subscription(1, 'o.>', () => {});
  s.start(5000, []);
  assert.equal(s.accept(msg('o.us', 3, 4999)).deliver, false);
  assert.equal(s.position('o.us'), undefined);
  assert.equal(s.accept(msg('o.us', 4, 5000)).deliver, true);
  assert.equal(s.accept(msg('o.us', 4, 5000)).deliver, false, 'then tracked');
  assert.equal(s.cursor(), '1~5000~o.us~4');
});

test('gaps move the position and are reported once', () => {
  const s = new Subscription(1, 'o.eu', () => {});
  s.start(null, [['o.eu', 2]]);
  assert.equal(s.acceptGap({ topic: 'o.eu', from: 3, to: 9 }), true);
  assert.equal(s.acceptGap({ topic: 'o.eu', from: 3, to: 9 }), false);
  assert.equal(s.accept(msg('o.eu', 10)).deliver, true);
  assert.equal(s.cursor(), '1~0~o.eu~10');
});

test('ready resolves on activation, rejects on failure; unsubscribe closes', async () => {
  const a = new Subscription(1, 'a', () => {});
  a.start(null, []);
  a.markActive();
  await a.ready;
  const b = new Subscription(2, 'b', () => {});
  b.fail(new Error('refused'));
  await assert.rejects(b.ready, /refused/);
  assert.equal(b.isClosed, true);
  let removed = null;
  a.onUnsubscribe = (s) => (removed = s);
  a.unsubscribe();
  assert.equal(removed, a);
  assert.equal(a.isClosed, true);
  assert.equal(new Subscription(3, 'c', () => {}).cursor(), null);
});
