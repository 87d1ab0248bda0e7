/** Tests of pages: cursors, limits, the byte budget, descending order. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fitBytes, pageOf } from './paging.js';

const items = Array.from({ length: 10 }, (_, i) => ({ id: `j${i}`, pad: 'x'.repeat(90) }));
const key = (x: { id: string }): string => x.id;

test('pages by limit walk the whole list once, in order', () => {
  const seen: string[] = [];
  let after: string | undefined;
  for (let n = 0; n < 10; n++) {
    const p = pageOf(items, key, { after, limit: 3 });
    seen.push(...p.items.map(key));
    if (p.next === null) break;
    after = p.next;
  }
  assert.deepEqual(seen, items.map(key));
});

test('the byte budget cuts a page; at least one item always goes', () => {
  const p = pageOf(items, key, { budgetBytes: 350 });
  assert.equal(p.items.length, 3);
  assert.equal(p.next, 'j2');
  const one = pageOf(items, key, { budgetBytes: 1 });
  assert.deepEqual([one.items.length, one.next], [1, 'j0']);
});

test('a cursor past the end is an empty last page; descending order pages backwards', () => {
  assert.deepEqual(pageOf(items, key, { after: 'j9' }), { items: [], next: null });
  const desc = [...items].reverse();
  const p = pageOf(desc, key, { after: 'j5', limit: 2, descending: true });
  assert.deepEqual(p.items.map(key), ['j4', 'j3']);
  assert.equal(p.next, 'j3');
});

test('fitBytes keeps the leading items that fit and says if any were cut', () => {
  assert.deepEqual(fitBytes(items, 250).items.length, 2);
  assert.equal(fitBytes(items, 250).cut, true);
  assert.equal(fitBytes(items).cut, false);
});
