/**
 * The Drover console's page: hosts, jobs, operations with each job's migration progress, image
 * sets and the audit trail, kept live from the console server's event stream; and, when the
 * console allows it, actions (migrate, drain, cordon, checkpoint). Plain DOM, no framework.
 */
import type { ClusterJob, MigrationProgressEvent, OperationRecord } from '@drover/protocol';
import { ago, badge, bytes, fill, h, meter, table, toast } from './dom.js';
import type { ConsoleSnapshot as Snapshot } from './wire.js';

interface Hello {
  identity: { role: string; name: string } | null;
  actions: boolean;
}

/** A job's latest migration progress, from the agents' events. */
interface Progress {
  migrationId: string;
  source: string;
  destination: string;
  phase: string;
  bytes: number;
  totalBytes: number;
  rate: number;
  at: number;
}

const PHASES = ['prepared', 'dumped', 'transferring', 'pulling-pages', 'done'] as const;

let snap: Snapshot | null = null;
let hello: Hello = { identity: null, actions: false };
const progress = new Map<string, Progress>();
/** What the operator picked in each job's destination list (kept across re-renders). */
const picked = new Map<string, string>();

// ---- actions ----

async function act(op: string, body: Record<string, unknown>): Promise<void> {
  const res = await fetch(`/api/actions/${op}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-drover-console': '1' },
    body: JSON.stringify(body),
  });
  const r = (await res.json().catch(() => ({}))) as { error?: string };
  if (!res.ok) toast(r.error ?? `${op} refused (${res.status})`, true);
  else toast(`${op} asked`);
}

function button(label: string, action: string, onClick: () => void): HTMLElement {
  const b = h('button', { type: 'button', 'data-action': action }, label);
  b.addEventListener('click', onClick);
  return b;
}

// ---- sections ----

function renderHosts(s: Snapshot): void {
  const rows = s.hosts.map((x) => {
    const mem = x.info.memory;
    const usedPct = mem.totalBytes ? 100 - (100 * mem.availableBytes) / mem.totalBytes : 0;
    const live = x.info.jobs.filter((j) =>
      ['running', 'frozen', 'checkpointing', 'migrating', 'starting'].includes(j.state),
    ).length;
    return h(
      'tr',
      { 'data-host': x.host },
      h('td', { class: 'mono' }, x.host),
      h(
        'td',
        { class: 'state' },
        x.reachable ? badge('up') : badge('unreachable'),
        ' ',
        x.cordoned ? badge('cordoned') : null,
      ),
      h(
        'td',
        {},
        meter(usedPct, `${usedPct.toFixed(0)}% used`),
        ' ',
        h(
          'span',
          { class: 'muted' },
          `${bytes(mem.availableBytes)} free of ${bytes(mem.totalBytes)}`,
        ),
      ),
      h('td', {}, String(x.info.cpus)),
      h('td', { class: 'jobs' }, String(live)),
      h('td', { class: 'muted' }, `CRIU ${x.info.criu.version}`),
      h('td', { class: 'muted' }, ago(x.lastSeen)),
      hello.actions
        ? h(
            'td',
            { class: 'actions' },
            x.cordoned
              ? button('Uncordon', 'uncordon', () => void act('uncordon', { host: x.host }))
              : button('Cordon', 'cordon', () => void act('cordon', { host: x.host })),
            button('Drain', 'drain', () => void act('drain', { host: x.host })),
          )
        : null,
    );
  });
  fill(
    'hosts',
    table(
      [
        'HOST',
        'STATE',
        'MEMORY',
        'CPUS',
        'JOBS',
        'CRIU',
        'LAST HEARTBEAT',
        ...(hello.actions ? [''] : []),
      ],
      rows,
      'no hosts have sent a heartbeat',
    ),
  );
}

function renderJobs(s: Snapshot): void {
  const usable = s.hosts.filter((x) => x.reachable && !x.cordoned).map((x) => x.host);
  const rows = s.jobs.map((j) => {
    // A job's own address, where jobs have one (`address`, or `network.address`).
    const net = j as ClusterJob & {
      address?: string | null;
      network?: { address?: string | null } | null;
    };
    const addr = net.address ?? net.network?.address ?? null;
    const p = progress.get(j.id);
    const moving = p && p.phase !== 'done' && Date.now() - p.at < 30_000;
    let actions: HTMLElement | null = null;
    if (hello.actions) {
      const others = usable.filter((x) => x !== j.host);
      const select = h(
        'select',
        { 'data-job-destination': j.id, 'aria-label': `destination of ${j.id}` },
        h('option', { value: '' }, 'placement picks'),
        ...others.map((x) => h('option', { value: x, selected: picked.get(j.id) === x }, x)),
      ) as HTMLSelectElement;
      select.addEventListener('change', () => picked.set(j.id, select.value));
      actions = h(
        'td',
        { class: 'actions' },
        select,
        button('Migrate', 'migrate', () => {
          const to = picked.get(j.id);
          void act('migrate', { jobId: j.id, ...(to ? { to } : {}) });
        }),
        button('Checkpoint', 'checkpoint', () => void act('checkpoint', { jobs: [j.id] })),
      );
    }
    return h(
      'tr',
      { 'data-job': j.id },
      h('td', { class: 'mono' }, j.id),
      h('td', {}, j.name),
      h('td', { class: 'host mono' }, j.host),
      h('td', { class: 'state' }, badge(moving ? 'migrating' : j.state)),
      h('td', { class: 'mono' }, addr ?? '–'),
      h('td', { class: 'mono' }, String(j.mainPid ?? '–')),
      h('td', { class: 'mono' }, j.command.join(' ').slice(0, 80)),
      actions,
    );
  });
  fill(
    'jobs',
    table(
      ['JOB', 'NAME', 'HOST', 'STATE', 'ADDRESS', 'PID', 'COMMAND', ...(hello.actions ? [''] : [])],
      rows,
      'no jobs run',
    ),
  );
}

/** A job's migration as phase chips and a byte meter. */
function migrationProgress(jobId: string, done: OperationRecord['migration'] | null): HTMLElement {
  const p = progress.get(jobId);
  const phase = done?.state === 'done' ? 'done' : (p?.phase ?? 'preparing');
  const at = PHASES.indexOf(phase as (typeof PHASES)[number]);
  const pct =
    phase === 'done'
      ? 100
      : p && p.totalBytes > 0
        ? Math.min(100, (100 * p.bytes) / p.totalBytes)
        : 0;
  return h(
    'div',
    {
      class: 'progress phases',
      'data-job': jobId,
      'data-phase': phase,
      'data-pct': pct.toFixed(0),
    },
    ...PHASES.map((x, i) =>
      // Pages are pulled after the switch only in post-copy: the chip shows when it happens.
      x === 'pulling-pages' && phase !== x && done?.mode !== 'post-copy'
        ? null
        : h('span', { class: `phase${i < at ? ' reached' : ''}${i === at ? ' now' : ''}` }, x),
    ),
    meter(pct),
    p && phase === 'transferring'
      ? h(
          'span',
          { class: 'muted' },
          `${bytes(p.bytes)} / ${bytes(p.totalBytes)} · ${bytes(p.rate)}/s`,
        )
      : null,
  );
}

function renderError(o: OperationRecord): HTMLElement | null {
  if (!o.error) return null;
  const lines = [`${o.error.code}: ${o.error.message}`];
  for (let c = o.error.cause; c; c = c.cause) lines.push(`  caused by ${c.code}: ${c.message}`);
  for (const s of o.error.suppressed ?? [])
    lines.push(`  while rolling back, ${s.code}: ${s.message}`);
  return h('div', { class: 'error detail' }, lines.join('\n'));
}

function renderOp(o: OperationRecord): HTMLElement {
  const target = String(o.request['jobId'] ?? o.host ?? o.imageSet ?? '');
  const title = h(
    'div',
    { class: 'title' },
    badge(o.state, o.state === 'running' ? 'moving' : o.state),
    h('strong', {}, o.kind),
    h('span', { class: 'mono' }, target),
    o.kind === 'migrate' && o.migration
      ? h('span', { class: 'muted' }, `${o.migration.source} → ${o.migration.destination}`)
      : o.kind === 'migrate' && typeof o.request['destination'] === 'string'
        ? h('span', { class: 'muted' }, `→ ${o.request['destination']}`)
        : null,
    h('span', { class: 'muted mono' }, o.opId),
    h('span', { class: 'muted' }, ago(o.createdAt)),
  );
  const detail: (HTMLElement | null)[] = [];
  if (o.kind === 'migrate') {
    detail.push(migrationProgress(String(o.request['jobId']), o.migration));
    if (o.migration?.state === 'done') {
      const s = o.migration.stats;
      detail.push(
        h(
          'div',
          { class: 'muted detail' },
          `downtime ${s.frozenMs} ms · dump ${s.dumpMs} ms · transfer ${s.transferMs} ms · restore ${s.restoreMs} ms · ${bytes(s.bytes)} · ${o.migration.mode}`,
        ),
      );
    }
  }
  if (o.kind === 'drain') {
    detail.push(
      table(
        ['JOB', 'NAME', 'OUTCOME', 'TO', 'PROGRESS', 'FROZEN', 'WHY'],
        (o.items ?? []).map((i) =>
          h(
            'tr',
            { 'data-drain-job': i.jobId },
            h('td', { class: 'mono' }, i.jobId),
            h('td', {}, i.name),
            h('td', {}, badge(i.state)),
            h('td', { class: 'mono' }, i.destination ?? '–'),
            h(
              'td',
              {},
              i.state === 'moving' || i.state === 'done'
                ? migrationProgress(
                    i.jobId,
                    i.state === 'done' ? ({ state: 'done' } as never) : null,
                  )
                : null,
            ),
            h('td', {}, i.frozenMs === null ? '–' : `${i.frozenMs} ms`),
            h('td', { class: 'muted' }, i.reason ?? ''),
          ),
        ),
        'no jobs on the host',
      ),
    );
  }
  if (o.kind === 'checkpoint' || o.kind === 'restore') {
    detail.push(
      h(
        'div',
        { class: 'phases detail' },
        h('span', { class: 'phase now' }, o.phase ?? o.state),
        ...(o.members ?? []).map((m) =>
          h('span', { class: 'phase' }, `${m.name || m.jobId}@${m.host}: ${m.state}`),
        ),
        typeof o.freezeSkewMs === 'number'
          ? h('span', { class: 'muted' }, `freeze skew ${o.freezeSkewMs.toFixed(1)} ms`)
          : null,
      ),
    );
  }
  detail.push(renderError(o));
  return h(
    'div',
    { class: 'op', 'data-op': o.opId, 'data-kind': o.kind, 'data-state': o.state },
    title,
    ...detail,
  );
}

function renderOps(s: Snapshot): void {
  const ops = s.ops.slice(0, 12);
  fill(
    'ops',
    ops.length
      ? h('div', {}, ...ops.map(renderOp))
      : h('div', { class: 'empty' }, 'no operations yet'),
  );
}

function renderSets(s: Snapshot): void {
  fill(
    'sets',
    table(
      ['SET', 'STATE', 'JOBS', 'SIZE', 'SKEW', 'CREATED'],
      s.sets.map((x) =>
        h(
          'tr',
          { 'data-set': x.name },
          h('td', { class: 'mono' }, x.name),
          h('td', {}, badge(x.state, x.state === 'complete' ? 'ok' : 'warn')),
          h('td', {}, x.jobs.map((j) => j.name).join(', ')),
          h('td', {}, bytes(x.sizeBytes)),
          h('td', {}, x.freezeSkewMs === null ? '–' : `${x.freezeSkewMs.toFixed(1)} ms`),
          h('td', { class: 'muted' }, ago(x.createdAt)),
        ),
      ),
      'no image sets',
    ),
  );
}

function renderAudit(s: Snapshot): void {
  const rows = [...s.audit].reverse().slice(0, 25);
  fill(
    'audit',
    table(
      ['WHEN', 'WHO', 'OP', 'OUTCOME'],
      rows.map((e) =>
        h(
          'tr',
          {},
          h('td', { class: 'muted' }, ago(e.time)),
          h('td', {}, `${e.entry.caller.role} ${e.entry.caller.name}`),
          h('td', { class: 'mono' }, e.entry.op),
          h(
            'td',
            {},
            e.entry.phase === 'asked'
              ? badge('asked', 'warn')
              : badge(e.entry.outcome ?? '?', e.entry.outcome === 'ok' ? 'ok' : 'bad'),
          ),
        ),
      ),
      'nothing recorded',
    ),
  );
}

function render(): void {
  if (!snap) return;
  const who = document.getElementById('who');
  if (who) {
    who.textContent = hello.identity
      ? `${hello.identity.role} ${hello.identity.name} · ${hello.actions ? 'actions on' : 'read-only'}`
      : `no certificate · ${hello.actions ? 'actions on' : 'read-only'}`;
  }
  const at = document.getElementById('at');
  if (at)
    at.textContent = snap.error
      ? `controller: ${snap.error}`
      : `as of ${new Date(snap.at).toLocaleTimeString()}`;
  renderHosts(snap);
  renderJobs(snap);
  renderOps(snap);
  renderSets(snap);
  renderAudit(snap);
}

// ---- the live feed ----

function onEvent(e: { host: string; kind: string; value: unknown }): void {
  if (e.kind !== 'migration') return;
  const v = e.value as MigrationProgressEvent;
  const prev = progress.get(v.jobId);
  const same = prev?.migrationId === v.migrationId;
  progress.set(v.jobId, {
    migrationId: v.migrationId,
    source: e.host,
    destination: v.destination,
    phase: v.phase,
    bytes: v.bytes ?? (same ? prev.bytes : 0),
    totalBytes: v.totalBytes ?? (same ? prev.totalBytes : 0),
    rate: v.rateBytesPerSec ?? (same ? prev.rate : 0),
    at: Date.now(),
  });
  // Progress is redrawn at once; the rest comes with the next picture.
  if (snap) {
    renderOps(snap);
    renderJobs(snap);
  }
}

function connect(): void {
  const conn = document.getElementById('conn');
  const es = new EventSource('/api/events');
  es.addEventListener('open', () => {
    if (conn) {
      conn.textContent = 'live';
      conn.className = 'conn up';
    }
  });
  es.addEventListener('error', () => {
    if (conn) {
      conn.textContent = 'reconnecting…';
      conn.className = 'conn down';
    }
  });
  es.addEventListener('hello', (m) => {
    hello = JSON.parse((m as MessageEvent<string>).data) as Hello;
    render();
  });
  es.addEventListener('snapshot', (m) => {
    snap = JSON.parse((m as MessageEvent<string>).data) as Snapshot;
    render();
  });
  es.addEventListener('event', (m) => onEvent(JSON.parse((m as MessageEvent<string>).data)));
  es.addEventListener('action', (m) => {
    const a = JSON.parse((m as MessageEvent<string>).data) as { ok: boolean; message: string };
    toast(a.message, !a.ok);
  });
}

connect();
