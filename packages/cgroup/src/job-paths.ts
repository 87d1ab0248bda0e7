/** Naming a job's cgroups: id validation and the directory of the job in each hierarchy it uses. */
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import type { CgroupLayout, CgroupVersion } from './hierarchy.js';

/** Safe cgroup name: starts alphanumeric, then letters, digits, `.`, `_`, `-`; at most 128 chars. */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The parent cgroup used when none is given. */
export const DEFAULT_PARENT = 'drover';

/** A job's cgroup directories, one per hierarchy it uses. */
export interface JobCgroupPaths {
  /** `<v2>/<parent>/<jobId>` when the host has a v2 hierarchy; the primary one then. */
  readonly v2: string | null;
  /** `<v1 freezer>/<parent>/<jobId>`, only when v2 cannot freeze. */
  readonly v1Freezer: string | null;
  /** `<v1 memory>/<parent>/<jobId>`, only when memory limits come from v1. */
  readonly v1Memory: string | null;
  /** The directory whose freezer the job uses: give this to CRIU's `--freeze-cgroup`. */
  readonly freezer: string | null;
  /** The directory holding the memory limit files. */
  readonly memory: string | null;
  /**
   * Every directory, primary first (the one `pids()` reads). A shell joins the job by writing its
   * PID to `<dir>/cgroup.procs` for each of them.
   */
  readonly all: readonly string[];
}

/** Throw InvalidArgument unless `jobId` is one safe path segment (no `/`, no `..`). */
export function validateJobId(jobId: unknown): asserts jobId is string {
  if (typeof jobId !== 'string' || !SAFE_NAME.test(jobId)) {
    throw new DroverError(
      ErrorCode.InvalidArgument,
      `invalid job id ${JSON.stringify(jobId)}: use 1-128 of [A-Za-z0-9._-], starting alphanumeric`,
      { details: { jobId: String(jobId) } },
    );
  }
}

/** Throw InvalidArgument unless `parent` is one or more safe segments joined by `/`. */
export function validateParent(parent: string): void {
  const parts = parent.split('/');
  if (parts.length > 8 || !parts.every((p) => SAFE_NAME.test(p))) {
    throw new DroverError(
      ErrorCode.InvalidArgument,
      `invalid cgroup parent ${JSON.stringify(parent)}`,
      {
        details: { parent },
      },
    );
  }
}

/** The job's directory in each hierarchy it uses, given the host layout. */
export function jobCgroupPaths(
  layout: CgroupLayout,
  parent: string,
  jobId: string,
): JobCgroupPaths {
  validateParent(parent);
  validateJobId(jobId);
  const under = (mount: string | null): string | null =>
    mount === null ? null : join(mount, parent, jobId);
  const v2 = under(layout.v2);
  const v1Freezer = layout.freezer === 'v1' ? under(layout.v1Freezer) : null;
  const v1Memory = layout.memory === 'v1' ? under(layout.v1Memory) : null;
  const pick = (version: CgroupVersion | null, v1: string | null): string | null =>
    version === 'v2' ? v2 : version === 'v1' ? v1 : null;
  const all = [v2, v1Freezer, v1Memory].filter((d): d is string => d !== null);
  if (all.length === 0) {
    throw new DroverError(ErrorCode.Cgroup, `no usable cgroup hierarchy under ${layout.root}`, {
      details: { layout: { ...layout } },
    });
  }
  return {
    v2,
    v1Freezer,
    v1Memory,
    freezer: pick(layout.freezer, v1Freezer),
    memory: pick(layout.memory, v1Memory),
    all,
  };
}
