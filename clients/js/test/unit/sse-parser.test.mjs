import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SseParser } from '../../dist/index.js';

test('parses herald streams in arbitrary chunks, with ids, comments and CRLF', () => {
  const text =
    'retry: 1000\nid: 1~5\n\n: ping\nid: 1~6\n\n' +
    'id: 1~5~a~1\nevent: message\ndata: {"topic":"a","seq":1}\n\n' +
    'id: 1~5~a~3\r\nevent: gap\r\ndata: {"topic":"a","from":2,"to":3}\r\n\r\n' +
    'data: line1\ndata: line2\n\n';
  for (const size of [1, 2, 3, 7, 1000]) {
    const events = [];
    const p = new SseParser((e) => events.push(e));
    for (let i = 0; i < text.length; i += size) p.feed(text.slice(i, i + size));
    assert.deepEqual(events, [
      { event: 'message', data: '{"topic":"a","seq":1}', id: '1~5~a~1' },
      { event: 'gap', data: '{"topic":"a","from":2,"to":3}', id: '1~5~a~3' },
      { event: 'message', data: 'line1\nline2', id: '1~5~a~3' },
    ], `chunk size ${size}`);
    assert.equal(p.lastEventId, '1~5~a~3');
  }
});
