/**
 * `drover demo [--dir D]`: a short scripted tour of the local cluster `drover up` started, run
 * through the real CLI — each drover command is printed, then what it printed.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CommandModule } from 'yargs';
import { ChildExited, ShownFailure } from '@drover/cli-kit';
import { DroverError, ErrorCode } from '@drover/common';
import { readLocalState } from '@drover/local-cluster/local-state';
import { defaultLocalDir, type GlobalArgs } from '../context.js';
import { dirOption, type LocalArgs } from './up.js';
import { ECHO_PORT, ECHO_SERVICE, EchoClient } from './demo-client.js';

/** This CLI's entry point: the tour runs it as an operator would. */
const CLI_MAIN = fileURLToPath(new URL('../main.js', import.meta.url));

interface Step {
  code: number;
  stdout: string;
}

/**
 * Stops the tour: a check failed (the tour exits 1), or a step's command did (the tour exits
 * with that command's code).
 */
class TourStopped extends Error {
  constructor(
    message: string,
    readonly step?: { command: string; status: number },
  ) {
    super(message);
  }

  /** What the tour exits with, once it has said why it stopped. */
  failure(): ShownFailure | ChildExited {
    return this.step
      ? new ChildExited(this.step.command, this.step.status)
      : new ShownFailure(this.message);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export const demoCommand: CommandModule<GlobalArgs, LocalArgs> = {
  command: 'demo',
  describe:
    'A scripted tour of the local cluster (drover up): run, migrate, drain, checkpoint and restore',
  builder: (y) => y.option('dir', dirOption),
  handler: async (argv) => {
    const state = readLocalState(argv.dir);
    if (state?.phase !== 'up' || state.natsUrl === undefined) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `no local cluster is up in ${argv.dir}: start one with \`drover up\``,
      );
    }
    if (state.hosts < 2) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `the tour moves a job between hosts: it needs 2 or more, this cluster has ${state.hosts} ` +
          '(`drover down`, then `drover up --hosts 3`)',
      );
    }
    // The tour's commands authenticate as the cluster's operator (whatever DROVER_NATS_* says).
    childEnv = { ...process.env };
    delete childEnv.DROVER_NATS_CA;
    delete childEnv.DROVER_NATS_CERT;
    delete childEnv.DROVER_NATS_KEY;
    if (state.tls) {
      childEnv.DROVER_NATS_CA = state.tls.caFile;
      childEnv.DROVER_NATS_CERT = state.tls.certFile;
      childEnv.DROVER_NATS_KEY = state.tls.keyFile;
    }
    try {
      const custom = argv.dir !== defaultLocalDir({});
      await tour(
        state.natsUrl,
        state.runId ?? '',
        join(state.runDir ?? argv.dir, 'shared', 'demo'),
        custom ? ` --dir ${argv.dir}` : '',
        state.hosts,
      );
    } catch (err) {
      if (!(err instanceof TourStopped)) throw err;
      process.stderr.write(`drover demo: ${err.message}\n`);
      throw err.failure();
    }
  },
};

/** Print a step's heading (bold on a terminal). */
function heading(s: string): void {
  const [b, e] = process.stdout.isTTY ? ['\x1b[1m', '\x1b[0m'] : ['', ''];
  process.stdout.write(`\n${b}== ${s}${e}\n`);
}

/** The environment of the tour's commands (set by the handler). */
let childEnv: NodeJS.ProcessEnv = process.env;

/** Run `drover ARGS` against the local cluster, printing the command and its output. */
function drover(natsUrl: string, args: readonly string[], quiet = false): Promise<Step> {
  const shown = args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`));
  if (!quiet) process.stdout.write(`$ drover ${shown.join(' ')}\n`);
  return new Promise((resolve, reject) => {
    // --nats is given explicitly so the tour reaches the local cluster whatever the environment
    // says; the command shown is what an operator types on this machine.
    const child = spawn(process.execPath, [CLI_MAIN, '--nats', natsUrl, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: childEnv,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      if (!quiet) process.stdout.write(stdout + stderr);
      resolve({ code: code ?? 1, stdout });
    });
  });
}

/** Run a step that must succeed. */
async function must(natsUrl: string, args: readonly string[]): Promise<Step> {
  const r = await drover(natsUrl, args);
  if (r.code !== 0) {
    throw new TourStopped(`\`drover ${args[0]}\` failed; the tour stops`, {
      command: `drover ${args[0]}`,
      status: r.code,
    });
  }
  return r;
}

/**
 * The tour's job: a counter appending to a file on storage every host sees (the local cluster's
 * run directory, as real hosts would share an NFS mount), so it can be read wherever it runs.
 */
class Counter {
  constructor(readonly file: string) {}

  command(): string[] {
    return [
      '/bin/sh',
      '-c',
      'i=0; while :; do i=$((i+1)); echo $i >> "$1"; sleep 0.1; done',
      'counter',
      this.file,
    ];
  }

  /** What is wrong with the sequence written so far (a number lost or repeated), or null. */
  gapOrRepeat(): string | null {
    const lines = readFileSync(this.file, 'utf8').trim().split('\n');
    for (let i = 0; i < lines.length; i++) {
      if (Number(lines[i]) !== i + 1) return `line ${i + 1} says ${lines[i]}`;
    }
    return null;
  }

  /** Print and return the counter's last value. */
  read(): number {
    let last = '';
    try {
      last = readFileSync(this.file, 'utf8').trim().split('\n').pop() ?? '';
    } catch {
      // not written yet
    }
    const n = Number(last);
    if (last === '' || !Number.isInteger(n))
      throw new TourStopped(`the counter wrote nothing readable to ${this.file}`);
    process.stdout.write(`counter at ${n}\n`);
    return n;
  }
}

/**
 * A service with its own address, and this machine — outside the cluster — as its client on one
 * held connection while the service moves host to host: the client's own view is printed.
 */
async function serviceTour(natsUrl: string, hosts: number): Promise<void> {
  heading(
    'a service with its own address on the job network, and a client outside the cluster (this machine) holding one connection to it',
  );
  const run = await must(natsUrl, [
    'run',
    '--host',
    'h1',
    '--name',
    'echo',
    '--env',
    'UV_USE_IO_URING=0',
    '--',
    ...ECHO_SERVICE,
  ]);
  const m = /^(job-[0-9a-f]+) running on \S+ at (\S+)/m.exec(run.stdout);
  if (!m) throw new TourStopped('`drover run` printed no job id and address');
  const [, job, address] = m as unknown as [string, string, string];
  let client: EchoClient | null = null;
  try {
    await must(natsUrl, ['resolve', 'echo']);
    client = await EchoClient.open(address, ECHO_PORT);
    process.stdout.write(
      `the client connected to ${address}:${ECHO_PORT} from port ${client.now().localPort}\n`,
    );
    await sleep(1000);
    for (const to of hosts >= 3 ? ['h2', 'h3'] : ['h2', 'h1']) {
      heading(`move the service to ${to} while the client talks to it`);
      await must(natsUrl, ['migrate', job, '--to', to]);
      await sleep(1000);
      const v = client.now();
      if (v.failure !== null) throw new TourStopped(`the client saw: ${v.failure}`);
      process.stdout.write(
        `the client: ${v.exchanges} round trips on its one connection so far, longest wait ${v.longestGapMs} ms\n`,
      );
    }
    const v = client.now();
    process.stdout.write(
      `the client's own view: the same connection from start to end (its port ${v.localPort}), ` +
        `${v.exchanges} round trips, every echo right, longest wait ${v.longestGapMs} ms\n`,
    );
  } finally {
    client?.close();
    await drover(natsUrl, ['stop', job], true);
  }
}

async function tour(
  natsUrl: string,
  runId: string,
  sharedDir: string,
  dirFlag: string,
  hosts: number,
): Promise<void> {
  process.stdout.write(`A tour of the local cluster ${runId} (NATS ${natsUrl}).\n`);
  mkdirSync(sharedDir, { recursive: true });
  // A file of its own: a job of an earlier tour that was interrupted may still be counting.
  const tag = Date.now().toString(36);
  const counter = new Counter(join(sharedDir, `count-${tag}`));
  const counter2 = new Counter(join(sharedDir, `count-2-${tag}`));
  const set = `demo-${tag}`;
  let job: string | undefined;
  let job2: string | undefined;
  let setMade = false;
  let drained = false;
  try {
    heading('the hosts, as the controller sees them from their agents’ heartbeats');
    await must(natsUrl, ['hosts']);

    heading(`run a job on h1: a counter appending 10 numbers a second to ${counter.file}`);
    const run = await must(natsUrl, [
      'run',
      '--host',
      'h1',
      '--name',
      'counter',
      '--',
      ...counter.command(),
    ]);
    job = /^(job-[0-9a-f]+) running/m.exec(run.stdout)?.[1];
    if (job === undefined) throw new TourStopped('`drover run` printed no job id');
    await sleep(1500);
    const before = counter.read();

    heading(
      'migrate it live to h2: frozen, dumped, streamed, restored; the timeline says where the time went',
    );
    await must(natsUrl, ['migrate', job, '--to', 'h2']);
    await sleep(1000);
    const after = counter.read();
    if (after <= before) throw new TourStopped(`the counter did not go on (${before} → ${after})`);
    process.stdout.write(`it kept counting (${before} → ${after}), with the same PIDs inside\n`);
    await must(natsUrl, ['inspect', job]);

    heading('drain h2: cordon it and move every job off it');
    drained = true;
    await must(natsUrl, ['drain', 'h2']);
    await must(natsUrl, ['jobs']);
    await sleep(500);
    counter.read();
    await must(natsUrl, ['ops']);

    heading('put h2 back in service');
    await must(natsUrl, ['uncordon', 'h2']);
    drained = false;

    await serviceTour(natsUrl, hosts);

    heading('a second counter (placement picks its host), then a coordinated checkpoint of both');
    const run2 = await must(natsUrl, ['run', '--name', 'counter-2', '--', ...counter2.command()]);
    job2 = /^(job-[0-9a-f]+) running/m.exec(run2.stdout)?.[1];
    if (job2 === undefined) throw new TourStopped('`drover run` printed no job id');
    await sleep(1500);
    // Both are frozen before either is dumped (the freeze skew is printed), their images go to
    // the JetStream object store with checksums, then both are stopped.
    setMade = true;
    await must(natsUrl, ['checkpoint', job, job2, '--name', set]);
    const cut = [counter.read(), counter2.read()];
    await sleep(1000);
    if (counter.read() !== cut[0] || counter2.read() !== cut[1])
      throw new TourStopped('a checkpointed job went on counting');
    process.stdout.write('both stopped: they live in the image set now\n');
    await must(natsUrl, ['images', 'ls']);

    heading('restore the set: placement picks the hosts; both go on from the cut, together');
    await must(natsUrl, ['restore', set]);
    await sleep(1500);
    for (const c of [counter, counter2]) {
      const gap = c.gapOrRepeat();
      if (gap !== null) throw new TourStopped(`${c.file}: ${gap}`);
    }
    process.stdout.write(
      `they went on from ${cut[0]} and ${cut[1]}: ${counter.read()} and ${counter2.read()} now, ` +
        'no number lost or repeated\n',
    );
    await must(natsUrl, ['jobs']);
    await must(natsUrl, ['images', 'rm', set]);
    setMade = false;

    heading('stop the jobs');
    await must(natsUrl, ['stop', job]);
    job = undefined;
    await must(natsUrl, ['stop', job2]);
    job2 = undefined;
    rmSync(counter.file, { force: true });
    rmSync(counter2.file, { force: true });
  } finally {
    // A tour that stopped half-way leaves the cluster as it found it, as far as it can.
    if (drained) await drover(natsUrl, ['uncordon', 'h2'], true);
    if (job !== undefined) await drover(natsUrl, ['stop', job], true);
    if (job2 !== undefined) await drover(natsUrl, ['stop', job2], true);
    if (setMade) await drover(natsUrl, ['images', 'rm', set], true);
  }
  heading('done');
  process.stdout.write(
    'The local cluster is still up: try the commands `drover up` printed, or run the tour ' +
      `again.\n\`drover down${dirFlag}\` removes everything \`drover up\` started.\n`,
  );
}
