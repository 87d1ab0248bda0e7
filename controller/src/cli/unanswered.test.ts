/** Tests of the warning lists give when hosts did not answer, and of `--strict`'s exit code. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ExitCode } from './exit-codes.js';
import { reportUnanswered, unansweredWarning } from './unanswered.js';

test('the warning names every host that did not answer, and nothing when all did', () => {
  assert.equal(unansweredWarning(undefined, 'x'), null);
  assert.equal(unansweredWarning([], 'x'), null);
  assert.equal(
    unansweredWarning(['h2 (unreachable: no heartbeat for 40s)'], 'their jobs are not listed'),
    'drover: warning: 1 host did not answer; their jobs are not listed:\n' +
      'drover:   h2 (unreachable: no heartbeat for 40s)\n',
  );
});

test('--strict makes an incomplete list exit 7; without it the exit code stays', () => {
  const saved = process.exitCode;
  try {
    const out: string[] = [];
    process.exitCode = 0;
    reportUnanswered({ unanswered: ['h1 (no reply)'] }, 'w', false, (s) => out.push(s));
    assert.equal(process.exitCode, 0);
    assert.equal(out.length, 1);
    reportUnanswered({}, 'w', true, (s) => out.push(s));
    assert.equal(process.exitCode, 0);
    reportUnanswered({ unanswered: ['h1 (no reply)'] }, 'w', true, (s) => out.push(s));
    assert.equal(process.exitCode, ExitCode.incomplete);
    assert.equal(ExitCode.incomplete, 7);
  } finally {
    process.exitCode = saved;
  }
});
