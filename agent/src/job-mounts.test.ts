/** Tests of which mounts of a job are the host's (and so bound from the restoring host). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  dumpMountExternals,
  hostMountsOf,
  parseMountinfo,
  restoreMountExternals,
} from './job-mounts.js';

// The host: a root file system, its own /srv (a bind of a directory, as on the testbed), /proc.
const HOST = `49 48 254:0 / / rw,relatime - ext4 /dev/vda rw
51 49 0:20 / /proc rw,relatime - proc proc rw
74 51 0:40 / /proc rw,nosuid - proc proc rw
69 49 0:41 / /run rw,relatime - tmpfs tmpfs rw,mode=755
70 49 254:0 /tmp/drover-testbed/run/h1 /srv rw,relatime - ext4 /dev/vda rw
71 49 0:45 / /with\\040space rw - tmpfs tmpfs rw
`;
// The job: copies of those, its own /proc on top, a tmpfs it mounted, its /etc/hosts.
const JOB = `180 176 254:0 / / rw,relatime - ext4 /dev/vda rw
184 180 0:20 / /proc rw,relatime - proc proc rw
186 184 0:40 / /proc rw,nosuid - proc proc rw
188 186 0:55 / /proc rw,nosuid - proc proc rw
224 180 0:41 / /run rw,relatime - tmpfs tmpfs rw,mode=755
226 180 254:0 /tmp/drover-testbed/run/h1 /srv rw,relatime - ext4 /dev/vda rw
227 180 0:60 / /scratch rw - tmpfs tmpfs rw
228 180 254:0 /tmp/drover-testbed/run/h1/drover/jobs/j/hosts /etc/hosts rw - ext4 /dev/vda rw
229 180 0:45 / /with\\040space rw - tmpfs tmpfs rw
`;

test("mountpoints whose mounts are all copies of the host's are external, keyed in order", () => {
  const mounts = hostMountsOf(parseMountinfo(JOB), parseMountinfo(HOST));
  assert.deepEqual(mounts, [
    { key: 'dm0', mountpoint: '/run', source: '/run' },
    { key: 'dm1', mountpoint: '/srv', source: '/srv' },
  ]);
  // Not: / (the restore's --root), /proc (the job's own is there too), the job's tmpfs, its
  // /etc/hosts (added by the caller with its own key), escaped paths (left to CRIU).
  assert.deepEqual(dumpMountExternals(mounts), ['mnt[/run]:dm0', 'mnt[/srv]:dm1']);
  assert.deepEqual(restoreMountExternals(mounts), ['mnt[dm0]:/run', 'mnt[dm1]:/srv']);
});
