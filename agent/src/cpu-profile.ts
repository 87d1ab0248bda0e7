/**
 * The agent's own CPU profile, for finding where its time goes: with `DROVER_CPU_PROFILE_DIR`
 * set, the agent profiles itself from its start (V8's sampling profiler, through `node:inspector`
 * in its own process: no port, no file open until a profile is written), and on each SIGUSR2
 * writes what it sampled since the last one as `<dir>/agent-<pid>-<n>.cpuprofile` (Chrome
 * DevTools' format) and starts again.
 */
import { Session } from 'node:inspector';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '@drover/common';

export function profileOnSignal(dir: string | undefined, log: Logger): void {
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object): Promise<unknown> =>
    new Promise((resolve, reject) =>
      session.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res))),
    );
  let n = 0;
  const start = (): Promise<unknown> =>
    post('Profiler.setSamplingInterval', { interval: 1000 }).then(() => post('Profiler.start'));
  void post('Profiler.enable').then(start);
  process.on('SIGUSR2', () => {
    void post('Profiler.stop')
      .then((res) => {
        const file = join(dir, `agent-${process.pid}-${++n}.cpuprofile`);
        writeFileSync(file, JSON.stringify((res as { profile: unknown }).profile));
        log.info('cpu profile written', { file });
        return start();
      })
      .catch((err: unknown) => log.warn('cpu profile failed', { err: String(err) }));
  });
}
