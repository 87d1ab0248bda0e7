#!/usr/bin/env node
/** The `drover-self-checkpoint` command: parses flags, calls requestSelfCheckpoint, maps errors to exit codes. */
import { parseArgs } from 'node:util';
import { toDroverError } from '@drover/common';
import { errorToFailure } from '@drover/protocol';
import { requestSelfCheckpoint } from './self-checkpoint.js';

const USAGE = `usage: drover-self-checkpoint [--dir JOBDIR] [--timeout-ms N] [--json]

Ask the local Drover agent to checkpoint the job this process runs in, leaving it running.
JOBDIR defaults to $DROVER_JOB_DIR. Prints the image id (or the ImageInfo as JSON with --json).
Exit status: 0 done, 1 the checkpoint failed, 2 bad usage.`;

function usage(message: string): never {
  process.stderr.write(`drover-self-checkpoint: ${message}\n${USAGE}\n`);
  process.exit(2);
}

let values: { dir?: string; 'timeout-ms'?: string; json?: boolean; help?: boolean };
try {
  ({ values } = parseArgs({
    options: {
      dir: { type: 'string' },
      'timeout-ms': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (err) {
  usage((err as Error).message);
}
if (values.help) {
  process.stdout.write(USAGE + '\n');
  process.exit(0);
}
const dir = values.dir ?? process.env.DROVER_JOB_DIR;
if (!dir) usage('no job directory: pass --dir or set DROVER_JOB_DIR');
let timeoutMs: number | undefined;
if (values['timeout-ms'] !== undefined) {
  timeoutMs = Number(values['timeout-ms']);
  if (!/^[0-9]+$/.test(values['timeout-ms']) || timeoutMs <= 0) {
    usage(`--timeout-ms must be a positive integer: ${values['timeout-ms']}`);
  }
}

try {
  const image = await requestSelfCheckpoint(dir, timeoutMs === undefined ? {} : { timeoutMs });
  process.stdout.write((values.json ? JSON.stringify(image) : image.imageId) + '\n');
} catch (err) {
  const e = toDroverError(err);
  if (values.json) process.stdout.write(JSON.stringify({ error: errorToFailure(e) }) + '\n');
  process.stderr.write(`drover-self-checkpoint: ${e.code}: ${e.message}\n`);
  process.exitCode = 1;
}
