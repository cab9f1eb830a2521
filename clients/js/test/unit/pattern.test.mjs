import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isConcrete, matchPattern, patternError, patternsOverlap, topicError } from '../../dist/index.js';
import { compilePattern } from '../../dist/pattern.js';

test('topic validation follows protocol-spec §1.1', () => {
  for (const ok of ['orders', 'orders.eu', 'chat.room-42.typing', 'sensor_7.temp', 'a'.repeat(64), Array(16).fill('a').join('.')]) {
    assert.equal(topicError(ok), null, ok);
  }
  for (const bad of ['', '.a', 'a.', 'a..b', 'a b', 'ü', 'a'.repeat(65), Array(17).fill('a').join('.'), 'a.*', 'a.>', '*', 'a~b', 'x'.repeat(40).concat('.', 'y'.repeat(63), '.', 'z'.repeat(63), '.', 'w'.repeat(63), '.', 'v'.repeat(30))]) {
    assert.notEqual(topicError(bad), null, bad);
  }
  assert.notEqual(topicError(7), null);
});

test('pattern validation: whole-token wildcards, > only last', () => {
  for (const ok of ['orders.*', 'orders.>', '*.eu', '>', '*', 'a.*.c', 'orders.eu']) assert.equal(patternError(ok), null, ok);
  for (const bad of ['a.b*', 'a.>x', 'a.>.b', '>.a', '', 'a..*']) assert.notEqual(patternError(bad), null, bad);
  assert.equal(isConcrete('a.b'), true);
  assert.equal(isConcrete('a.*'), false);
  assert.equal(isConcrete('a.>'), false);
});

test('matching has NATS semantics (spec table)', () => {
  const cases = [
    ['orders.*', 'orders.eu', true],
    ['orders.*', 'orders.us', true],
    ['orders.*', 'orders', false],
    ['orders.*', 'orders.eu.north', false],
    ['orders.>', 'orders.eu', true],
    ['orders.>', 'orders.eu.north', true],
    ['orders.>', 'orders', false],
    ['*.eu', 'orders.eu', true],
    ['*.eu', 'payments.eu', true],
    ['*.eu', 'eu', false],
    ['*.eu', 'orders.eu.x', false],
    ['>', 'anything.at.all', true],
    ['>', 'x', true],
    ['a.b', 'a.b', true],
    ['a.b', 'a.bc', false],
    ['a.*.c', 'a.b.c', true],
    ['a.*.c', 'a.b.d', false],
  ];
  for (const [p, t, want] of cases) {
    assert.equal(matchPattern(p, t), want, `${p} ~ ${t}`);
    assert.equal(compilePattern(p)(t), want, `compiled ${p} ~ ${t}`);
  }
});

test('pattern overlap', () => {
  const cases = [
    ['orders.*', 'orders.eu', true],
    ['orders.*', 'orders.>', true],
    ['orders.*', 'payments.*', false],
    ['orders.>', 'orders', false],
    ['>', 'a', true],
    ['*.eu', 'orders.*', true],
    ['a.*', 'a.b.c', false],
    ['a.>', 'a.b.c', true],
    ['a.b', 'a.b', true],
    ['a.b', 'a.c', false],
    ['*', 'a.b', false],
  ];
  for (const [a, b, want] of cases) {
    assert.equal(patternsOverlap(a, b), want, `${a} / ${b}`);
    assert.equal(patternsOverlap(b, a), want, `${b} / ${a}`);
  }
});
