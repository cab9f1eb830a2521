import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffDelay } from '../../dist/index.js';

test('full jitter: uniform in [0, min(max, min*2^n)]', () => {
  assert.equal(backoffDelay(0, 100, 1000, () => 0.999999), 99);
  assert.equal(backoffDelay(3, 100, 1000, () => 0.999999), 799);
  assert.equal(backoffDelay(10, 100, 1000, () => 0.999999), 999);
  assert.equal(backoffDelay(500, 100, 1000, () => 0.5), 500);
  assert.equal(backoffDelay(5, 100, 1000, () => 0), 0);
  for (let i = 0; i < 1000; i++) {
    const d = backoffDelay(i % 12, 50, 2000);
    assert.ok(d >= 0 && d <= Math.min(2000, 50 * 2 ** (i % 12)), String(d));
  }
});
