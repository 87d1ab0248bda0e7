/**
 * Agent liveness as the controller judges it: "gone" only after a direct check. A host silent
 * past the unreachable timeout is probed (`drover.live.<host>`, answered by the agent's
 * heartbeat thread, which heavy work on the agent's main thread cannot hold up) before it is
 * marked unreachable, and a long call on an agent fails only when its agent does not answer the
 * probe either, or answers as a restarted process. A slow agent is not a dead one.
 *
 * The bound: a dead agent is declared gone within the unreachable timeout + 1 s (the sweep) +
 * PROBE_TIMEOUT_MS.
 */
import type { Bus } from '@drover/bus';
import { DroverError, ErrorCode, type Logger } from '@drover/common';
import { livenessSubject, type LivenessReply } from '@drover/protocol';
import type { HostRegistry } from './host-registry.js';

/** How long a probe waits for the agent's answer (its heartbeat thread answers at once). */
export const PROBE_TIMEOUT_MS = 3000;
/** How often silent hosts are looked for. */
const SWEEP_MS = 1000;
/** How often a long call checks on its agent. */
const WATCH_MS = 500;
/** How far an agent's start (from its uptime) may seem to be after a call's start. */
const AGENT_START_SLACK_MS = 1500;

/** What a probe found: the agent's answer and when it came (controller clock), or null: no answer. */
type Probe = { reply: LivenessReply; atMs: number } | null;

/** Probes, sweeps and watched calls for one controller. */
export class Liveness {
  private readonly probes = new Map<string, Promise<Probe>>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly bus: Pick<Bus, 'request'>,
    private readonly registry: HostRegistry,
    private readonly unreachableAfterMs: number,
    private readonly log: Logger,
  ) {}

  /** Look for silent hosts every second: probe them, then mark the ones that did not answer. */
  start(): void {
    let running = false;
    this.timer = setInterval(() => {
      if (running) return;
      running = true;
      void this.sweep()
        .catch((err: unknown) => this.log.warn('liveness sweep failed', { err }))
        .finally(() => (running = false));
    }, SWEEP_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** One sweep: silent hosts are asked; those that answer stay reachable, the rest do not. */
  async sweep(): Promise<void> {
    await Promise.all(
      this.registry.silent().map(async (host) => {
        const p = await this.probe(host);
        if (p) {
          this.registry.vouch(host, p.reply);
          this.log.info('host silent but alive (answered a liveness probe)', {
            host,
            loop: p.reply.loop,
          });
        }
      }),
    );
    for (const h of this.registry.sweep()) {
      this.log.warn('host unreachable (no heartbeat, no answer to a liveness probe)', { host: h });
    }
  }

  /**
   * A host marked unreachable is asked once more, directly, before work is refused it: on a
   * loaded machine its heartbeats and the sweep's probe may both have come late. If it answers
   * it is reachable again. Hosts not marked unreachable are not asked.
   */
  async recheck(host: string): Promise<void> {
    if (this.registry.get(host)?.reachable !== false) return;
    const p = await this.probe(host);
    if (!p) return;
    this.registry.vouch(host, p.reply);
    this.log.info('host marked unreachable answered a liveness probe', { host });
  }

  /** Ask `host`'s agent directly whether it lives (one probe at a time per host). */
  probe(host: string): Promise<Probe> {
    let p = this.probes.get(host);
    if (!p) {
      p = this.bus.request(livenessSubject(host), {}, PROBE_TIMEOUT_MS).then(
        (reply) => ({ reply: reply as LivenessReply, atMs: Date.now() }),
        () => null,
      );
      this.probes.set(host, p);
      void p.finally(() => this.probes.delete(host));
    }
    return p;
  }

  /**
   * A long call (a migration, a dump, an upload) fails as soon as its agent is seen to be gone
   * — silent past the timeout and no answer to a probe — or restarted, rather than when its
   * timeout (minutes) runs out: a dead agent never replies. A busy one keeps its call.
   */
  watch<T>(host: string, op: string, call: Promise<T>): Promise<T> {
    const callStart = Date.now();
    return new Promise<T>((resolve, reject) => {
      let done = false;
      let checking = false;
      const finish = (f: () => void): void => {
        if (done) return;
        done = true;
        clearInterval(timer);
        f();
      };
      const gone = (why: string): void =>
        finish(() =>
          reject(
            new DroverError(ErrorCode.Unavailable, `the agent on ${host} ${why} during ${op}`, {
              retryable: true,
              details: { host, op },
            }),
          ),
        );
      /** An agent that started after the call went out cannot be the one running it. */
      const restarted = (seenAtMs: number, uptimeSec: number): boolean =>
        seenAtMs - uptimeSec * 1000 > callStart + AGENT_START_SLACK_MS;
      const check = async (): Promise<void> => {
        const h = this.registry.get(host);
        if (!h) return;
        if (restarted(h.lastSeenMs, h.info.uptimeSec)) return gone('restarted');
        // Silence counts from the call's start: a host that was silent before (an agent being
        // restarted) is judged on what it sends while the call runs.
        if (Date.now() - Math.max(h.lastSeenMs, callStart) <= this.unreachableAfterMs) return;
        const p = await this.probe(host);
        if (done) return;
        if (p === null)
          return gone('stopped answering (no heartbeat, no answer to a liveness probe)');
        if (restarted(p.atMs, p.reply.uptimeSec)) return gone('restarted');
        this.registry.vouch(host, p.reply);
      };
      const timer = setInterval(() => {
        if (checking) return;
        checking = true;
        void check().finally(() => (checking = false));
      }, WATCH_MS);
      call.then(
        (v) => finish(() => resolve(v)),
        (err: unknown) => finish(() => reject(err as Error)),
      );
    });
  }
}
