/** Human output of `drover images inspect NAME --job J`: what `crit x ps`, `fds` and `mems` print. */
import type { ControllerReplies, ImageProcess } from '@drover/protocol';
import { bytes, commandLine, table } from './output.js';

/** A decoded image: the process tree, then each process's files, sockets and memory. */
export function imageContentsReport(c: ControllerReplies['images-decode']): string {
  const out = [
    `${c.jobId} (${c.name}) in image set ${c.set}, checkpointed on ${c.host} · ` +
      `${c.processes.length} process(es) · ${bytes(c.sizeBytes)} of images` +
      (c.imageVersion !== null ? ` · CRIU image version ${c.imageVersion}` : '') +
      (c.truncated ? ' · some lists were cut' : ''),
    '',
    table(
      ['PID', 'PPID', 'PGID', 'SID', 'THREADS', 'MEMORY', 'COMMAND'],
      treeOrder(c.processes).map(({ p, depth }) => [
        String(p.pid),
        String(p.ppid),
        String(p.pgid),
        String(p.sid),
        String(p.threads.length),
        bytes(p.memory.dumpedBytes),
        `${'  '.repeat(depth)}${commandOf(p)}`,
      ]),
    ),
  ];
  for (const p of c.processes) {
    out.push(
      '',
      `process ${p.pid} (${p.comm})` +
        [
          p.exe ? `exe ${p.exe}` : '',
          p.cwd ? `cwd ${p.cwd}` : '',
          p.root && p.root !== '/' ? `root ${p.root}` : '',
        ]
          .filter(Boolean)
          .map((x) => ` · ${x}`)
          .join(''),
      table(
        ['FD', 'TYPE', 'OPEN'],
        p.files.map((f) => [String(f.fd), f.type, f.description]),
      ),
      `memory: ${bytes(p.memory.mappedBytes)} mapped, ${bytes(p.memory.dumpedBytes)} of it in the image`,
      table(
        ['START', 'END', 'SIZE', 'IN IMAGE', 'PERMS', 'MAPPING'],
        p.memory.mappings.map((m) => [
          m.start,
          m.end,
          bytes(m.sizeBytes),
          bytes(m.dumpedBytes),
          m.perms,
          m.what,
        ]),
      ),
    );
  }
  return out.join('\n');
}

/** Its argv as read from its memory, else its kernel name. */
function commandOf(p: ImageProcess): string {
  if (p.cmdline && p.cmdline.length > 0) return commandLine(p.cmdline);
  return `[${p.comm}]`;
}

/** Processes parents first, children indented under them. */
function treeOrder(ps: readonly ImageProcess[]): { p: ImageProcess; depth: number }[] {
  const kids = new Map<number, ImageProcess[]>();
  const pids = new Set(ps.map((p) => p.pid));
  for (const p of ps) kids.set(p.ppid, [...(kids.get(p.ppid) ?? []), p]);
  const out: { p: ImageProcess; depth: number }[] = [];
  const visit = (p: ImageProcess, depth: number): void => {
    out.push({ p, depth });
    for (const k of kids.get(p.pid) ?? []) visit(k, depth + 1);
  };
  for (const root of ps.filter((p) => !pids.has(p.ppid))) visit(root, 0);
  return out;
}
