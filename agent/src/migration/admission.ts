/**
 * What a destination needs free to take a job: its memory, and in stop-copy the images too. The
 * pages land in tmpfs while the source dumps and stay there until the restore has read them, so
 * for the length of the restore the host holds the job twice (tmpfs pages are not reclaimable).
 */
import type { MigrationMode } from '@drover/protocol';
import type { ScratchSpace } from './scratch.js';

export interface AdmissionFacts {
  readonly mode: MigrationMode;
  /** The job's memory on the source (its cgroup's usage). */
  readonly memoryBytes: number;
  /** MemAvailable less the agent's reserve. */
  readonly availableBytes: number;
  /** The tmpfs the images land in (null: scratch is on disk). */
  readonly scratch: ScratchSpace | null;
}

/** Why the host cannot take the job, with the figures, or null when it can. */
export interface AdmissionRefusal {
  readonly why: string;
  readonly details: Record<string, unknown>;
}

/** The images of a stop-copy are about the job's memory; a post-copy's hold no pages. */
function imageBytes(mode: MigrationMode, memoryBytes: number): number {
  return mode === 'post-copy' ? 0 : memoryBytes;
}

/** Check memory (the job plus its images when they sit in tmpfs) and the tmpfs's own room. */
export function admit(f: AdmissionFacts): AdmissionRefusal | null {
  const images = imageBytes(f.mode, f.memoryBytes);
  const inMemory = f.scratch ? images : 0;
  const needed = f.memoryBytes + inMemory;
  if (needed > f.availableBytes) {
    const peak = inMemory
      ? ` at the restore's peak: the job and its ${mib(images)} MiB of images in ${f.scratch!.root}`
      : '';
    return {
      why: `not enough memory (needs ${mib(needed)} MiB${peak}, ${mib(Math.max(0, f.availableBytes))} MiB available)`,
      details: { reason: 'capacity', neededBytes: needed, availableBytes: f.availableBytes },
    };
  }
  if (f.scratch && images > f.scratch.freeBytes) {
    return {
      why: `its images (${mib(images)} MiB) do not fit in ${f.scratch.root} (${mib(f.scratch.freeBytes)} MiB free)`,
      details: { reason: 'capacity', neededBytes: images, scratchFreeBytes: f.scratch.freeBytes },
    };
  }
  return null;
}

function mib(n: number): number {
  return Math.round(n / 2 ** 20);
}
