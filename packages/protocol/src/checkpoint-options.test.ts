import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import {
  CHECKPOINT_OPTIONS_SCHEMA,
  formatCheckpointOptions,
  parseCheckpointOptions,
  parseSize,
  resolveCheckpointOptions,
} from './checkpoint-options.js';
import { AgentOps } from './agent-api.js';

test('checkpoint options parse from their text form', () => {
  assert.deepEqual(parseCheckpointOptions(['file-locks', 'no-link-remap,ghost-limit=64M']), {
    fileLocks: true,
    linkRemap: false,
    ghostLimitBytes: 64 * 1024 * 1024,
  });
  assert.deepEqual(parseCheckpointOptions(['tcp-close=true', 'weak-sysctls=false']), {
    tcpClose: true,
    weakSysctls: false,
  });
  assert.deepEqual(parseCheckpointOptions([]), {});
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize('512k'), 512 * 1024);
  assert.equal(parseSize('1GiB'), 1024 ** 3);
  assert.equal(parseSize('lots'), null);
});

test('anything off the list, or a bad value, is INVALID_ARGUMENT naming the list', () => {
  for (const bad of [
    'shell-job',
    'ext-unix-sk',
    '--file-locks',
    'file-locks=yes',
    'no-file-locks=true',
    'ghost-limit',
    'ghost-limit=5G',
    'no-ghost-limit',
    'action-script=/bin/evil',
  ]) {
    assert.throws(
      () => parseCheckpointOptions([bad]),
      (e: unknown) =>
        isDroverError(e, 'INVALID_ARGUMENT') &&
        (e.details['known'] as string[]).includes('file-locks'),
      bad,
    );
  }
  // On the wire: unknown fields and bad types are refused by the schema.
  assert.throws(() => CHECKPOINT_OPTIONS_SCHEMA.parse({ shellJob: true }));
  assert.throws(() => CHECKPOINT_OPTIONS_SCHEMA.parse({ ghostLimitBytes: -1 }));
  assert.throws(() =>
    AgentOps.run.parse({ command: ['x'], checkpointOptions: { extUnixSk: true } }),
  );
  assert.throws(() => AgentOps.run.parse({ command: ['x'], until: 'forever' }));
  assert.throws(() => AgentOps.run.parse({ command: ['x'], mainPidfile: 'relative.pid' }));
});

test("a job's options win over its host's, which win over Drover's defaults", () => {
  const facts = { ownNetwork: false, largestGhostBytes: 0 };
  const d = resolveCheckpointOptions(undefined, undefined, facts);
  assert.deepEqual(d, {
    fileLocks: true,
    linkRemap: true,
    ghostLimitBytes: 1024 * 1024,
    tcpEstablished: false,
    skipInFlight: false,
    tcpClose: false,
    weakSysctls: false,
    evasiveDevices: false,
  });
  const net = resolveCheckpointOptions({}, {}, { ownNetwork: true, largestGhostBytes: 0 });
  assert.equal(net.tcpEstablished, true);
  assert.equal(net.skipInFlight, true);
  const host = { fileLocks: false, tcpClose: true };
  const mixed = resolveCheckpointOptions({ tcpClose: false, skipInFlight: true }, host, facts);
  assert.equal(mixed.fileLocks, false);
  assert.equal(mixed.tcpClose, false);
  assert.equal(mixed.skipInFlight, true);
  assert.equal(mixed.tcpEstablished, false);
});

test('the default ghost limit fits the largest unlinked file, in whole MiB', () => {
  const mib = 1024 * 1024;
  const g = (b: number): number =>
    resolveCheckpointOptions({}, {}, { ownNetwork: false, largestGhostBytes: b }).ghostLimitBytes;
  assert.equal(g(0), mib);
  assert.equal(g(100), mib);
  assert.equal(g(4 * mib + 1), 5 * mib);
  assert.equal(g(8 * 1024 * mib), 0xffff_ffff);
  assert.equal(
    resolveCheckpointOptions(
      { ghostLimitBytes: 0 },
      {},
      { ownNetwork: false, largestGhostBytes: mib * 3 },
    ).ghostLimitBytes,
    0,
  );
});

test('options print in their text form', () => {
  assert.equal(
    formatCheckpointOptions({
      fileLocks: true,
      linkRemap: false,
      ghostLimitBytes: 64 * 1024 * 1024,
    }),
    'file-locks no-link-remap ghost-limit=64M',
  );
  assert.deepEqual(
    parseCheckpointOptions(
      formatCheckpointOptions({ tcpClose: true, ghostLimitBytes: 1000 }).split(' '),
    ),
    { tcpClose: true, ghostLimitBytes: 1000 },
  );
});
