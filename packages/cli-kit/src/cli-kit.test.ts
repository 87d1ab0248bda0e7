/** The kit's exit-code table, its failure tail and its tables. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Argv } from 'yargs';
import { DroverError, ErrorCode } from '@drover/common';
import {
  ChildExited,
  exitCodeOf,
  runCli,
  ShownFailure,
  table,
  UsageError,
  type ExitCodeTable,
} from './mod.js';

const codes: ExitCodeTable = {
  failed: 1,
  usage: 2,
  byCode: { [ErrorCode.NotFound]: 3, [ErrorCode.FailedPrecondition]: 4 },
};

test('every outcome takes its exit code from the one table', () => {
  assert.equal(exitCodeOf(codes, new DroverError(ErrorCode.NotFound, 'no such job')), 3);
  assert.equal(exitCodeOf(codes, new DroverError(ErrorCode.Criu, 'dump failed')), 1);
  assert.equal(exitCodeOf(codes, new Error('plain')), 1);
  assert.equal(exitCodeOf(codes, new UsageError('--tail wants a number')), 2);
  assert.equal(exitCodeOf(codes, Object.assign(new Error('yargs'), { usage: true })), 2);
  assert.equal(exitCodeOf(codes, new ShownFailure('refused', ErrorCode.FailedPrecondition)), 4);
  assert.equal(exitCodeOf(codes, new ShownFailure('it ran and failed')), 1);
  assert.equal(exitCodeOf(codes, new ChildExited('drover-deploy', 5)), 5);
});

test('the runner prints a failure once, under the CLI name, and exits by the table', async () => {
  const written: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((s: string) => (written.push(s), true)) as typeof process.stderr.write;
  const run = (fail: unknown): Promise<number> =>
    runCli(
      {
        name: 'kit-test',
        usage: '$0 <command>',
        exitCodes: codes,
        version: '1',
        explain: () => ['caused by X'],
        advice: (err) => (err instanceof UsageError ? 'see kit-test --help' : null),
        build: (y) =>
          y.command('go', 'fail as told', {}, () => {
            throw fail;
          }),
      },
      ['go'],
    );
  try {
    assert.equal(await run(new DroverError(ErrorCode.NotFound, 'no such job')), 3);
    assert.deepEqual(written.splice(0), ['kit-test: no such job\n', 'kit-test: caused by X\n']);
    assert.equal(await run(new ShownFailure('shown', ErrorCode.FailedPrecondition)), 4);
    assert.deepEqual(written.splice(0), []);
    // Unknown commands and missing ones are usage errors (2), said once.
    const bare = { name: 'kit-test', usage: '', exitCodes: codes };
    const one = (y: Argv): Argv<object> => y.command('go', 'nothing', {}, () => {});
    assert.equal(await runCli({ ...bare, build: one }, ['nope']), 2);
    assert.match(written.splice(0).join(''), /^kit-test: Unknown argument: nope\n$/);
    assert.equal(await runCli({ ...bare, build: one }, []), 2);
    assert.equal(written.splice(0).join(''), 'kit-test: name a command (see --help)\n');
  } finally {
    process.stderr.write = write;
    process.exitCode = 0;
  }
});

test('a table pads every column but the last', () => {
  assert.equal(
    table(['A', 'BB', 'C'], [['xxx', 'y', 'z z'], ['1']]),
    ['A    BB  C', 'xxx  y   z z', '1'].join('\n'),
  );
});
