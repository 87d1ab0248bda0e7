/** Human output of cluster checkpoints, restores and image sets. */
import type { HostFreeze, ImageSet, OperationRecord } from '@drover/protocol';
import { bytes, table } from './output.js';

/** A checkpoint's or restore's outcome: each job, the freeze skew, and the per-phase timeline. */
export function clusterReport(o: OperationRecord): string {
  const what = o.kind === 'checkpoint' ? 'checkpoint' : 'restore';
  const lines = [
    `${what} of image set ${o.imageSet}: ${o.state} (${o.opId})` +
      (o.error ? `\n  ${o.error.message}` : ''),
  ];
  if (o.kind === 'checkpoint') {
    const figures = [
      // The cut itself (docs/CHECKPOINT.md, "What the skew measures"): a scheduled cut only.
      typeof o.requestSkewMs === 'number'
        ? `cut skew ${o.requestSkewMs} ms (first to last freeze requested)`
        : null,
      o.freezeSkewMs !== null && o.freezeSkewMs !== undefined
        ? `freeze skew ${o.freezeSkewMs} ms (first to last job frozen)`
        : null,
      o.frozenMs !== null && o.frozenMs !== undefined ? `frozen ${o.frozenMs} ms` : null,
      `jobs ${o.request['leaveRunning'] === true ? 'left running' : 'stopped'}`,
    ].filter(Boolean);
    lines.push(figures.join(' · '));
    if (o.freezes?.length) lines.push(`freezes: ${o.freezes.map(hostFreeze).join(', ')}`);
    if (o.cut) {
      const plans = `${o.cut.attempts} plan${o.cut.attempts === 1 ? '' : 's'}`;
      lines.push(
        `cut: scheduled ${o.cut.marginMs} ms ahead (${plans}); ` +
          `skew ${o.cut.skewMs} ms on the controller's clock` +
          (o.cut.requestSkewMs === undefined ? '' : ` (requests ${o.cut.requestSkewMs} ms)`),
      );
    }
  }
  lines.push(
    table(
      [
        'JOB',
        'NAME',
        o.kind === 'checkpoint' ? 'HOST' : 'RESTORED ON',
        'STATE',
        'DUMP',
        'SIZE',
        'NOTE',
      ],
      (o.members ?? []).map((m) => [
        m.jobId,
        m.name,
        m.host,
        m.state,
        m.dumpMs === null ? '-' : `${m.dumpMs} ms`,
        m.sizeBytes === null ? '-' : bytes(m.sizeBytes),
        m.reason ?? '',
      ]),
    ),
  );
  if (o.phases?.length) {
    const rows = o.phases.map((p, i) => {
      const next = o.phases![i + 1];
      return [p.phase, `${p.atMs} ms`, next ? `${next.atMs - p.atMs} ms` : ''];
    });
    lines.push(table(['phase', 'at', 'took'], rows));
  }
  return lines.join('\n');
}

/** `h1 3 jobs in 1 request (0.4 ms apart)`: how one host froze its part of the cut. */
function hostFreeze(f: HostFreeze): string {
  const jobs = `${f.jobIds.length} job${f.jobIds.length === 1 ? '' : 's'}`;
  const requests = `${f.requests} request${f.requests === 1 ? '' : 's'}`;
  return (
    `${f.host} ${jobs} in ${requests}` + (f.jobIds.length > 1 ? ` (${f.skewMs} ms apart)` : '')
  );
}

/** Image sets as a table. */
export function setsTable(sets: readonly ImageSet[]): string {
  return table(
    ['NAME', 'STATE', 'CREATED', 'JOBS', 'SIZE', 'SKEW', 'MODE'],
    sets.map((s) => [
      s.name,
      s.state,
      s.createdAt,
      String(s.jobs.length),
      bytes(s.sizeBytes),
      s.freezeSkewMs === null ? '-' : `${s.freezeSkewMs} ms`,
      s.leaveRunning ? 'left running' : 'stopped',
    ]),
  );
}

/** One image set in full: its jobs and their files. */
export function setDetail(s: ImageSet): string {
  return [
    `image set ${s.name}: ${s.state}, created ${s.createdAt} by ${s.opId}` +
      (s.freezeSkewMs === null ? '' : `, freeze skew ${s.freezeSkewMs} ms`),
    table(
      ['JOB', 'NAME', 'FROM', 'IMAGE', 'FILES', 'SIZE', 'MEMORY'],
      s.jobs.map((j) => [
        j.jobId,
        j.name,
        j.host,
        j.imageId,
        String(j.files.length),
        bytes(j.sizeBytes),
        bytes(j.memoryBytes),
      ]),
    ),
  ].join('\n');
}
