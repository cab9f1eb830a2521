import assert from 'node:assert/strict';
import { test } from 'node:test';
import { combineCursors, encodeCursor, parseCursor } from '../../dist/index.js';

test('parse and encode round-trip; topics in byte order', () => {
  const c = parseCursor('1~1764000000000~payments.eu~7~orders.eu~42');
  assert.equal(c.floor, 1764000000000);
  assert.deepEqual([...c.positions], [['payments.eu', 7], ['orders.eu', 42]]);
  assert.equal(encodeCursor(c.floor, c.positions), '1~1764000000000~orders.eu~42~payments.eu~7');
  assert.equal(encodeCursor(0, []), '1~0');
  assert.deepEqual(parseCursor('1~0'), { floor: 0, positions: new Map() });
  // Byte order: upper case before lower case, '-' before digits.
  assert.equal(encodeCursor(5, [['b', 1], ['B', 2], ['a-1', 3], ['a1', 4]]), '1~5~B~2~a-1~3~a1~4~b~1');
});

test('malformed cursors are refused', () => {
  for (const bad of ['', '2~0', '1', '1~x', '1~0~a', '1~0~a~b', '1~0~~1', '1~-1', '1~99999999999999999999']) {
    assert.throws(() => parseCursor(bad), /invalid cursor/, bad);
  }
});

test('combined cursor: lowest wildcard floor, lowest seq per tracked topic', () => {
  const subs = [
    { concrete: false, floor: 2000, positions: new Map([['o.eu', 10], ['o.us', 4]]) },
    { concrete: false, floor: 1000, positions: new Map([['o.eu', 12]]) },
    { concrete: true, floor: null, positions: new Map([['p.x', 0]]) },
    { concrete: true, floor: 500, positions: new Map([['o.eu', 11]]) }, // concrete floors do not lower the floor
  ];
  const c = combineCursors(subs);
  assert.equal(c.floor, 1000);
  assert.deepEqual(Object.fromEntries(c.positions), { 'o.eu': 10, 'o.us': 4, 'p.x': 0 });
  const r = combineCursors(subs, (t) => t.startsWith('o.'));
  assert.deepEqual(Object.fromEntries(r.positions), { 'o.eu': 10, 'o.us': 4 });
  // Only concrete subscriptions: any known floor, else 0.
  assert.equal(combineCursors([subs[2]]).floor, 0);
  assert.equal(combineCursors([subs[3]]).floor, 500);
});
