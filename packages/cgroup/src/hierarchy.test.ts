import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { detectCgroupLayout, kernelAtLeast } from './hierarchy.js';
import { removeTempDir, tempDir } from './fixtures.js';

const temps: string[] = [];
after(async () => {
  for (const t of temps) await removeTempDir(t);
});

/** Build a fake cgroup root: `files` maps relative paths to contents (directories are implied). */
async function fakeRoot(files: Record<string, string>): Promise<string> {
  const root = await tempDir();
  temps.push(root);
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(join(root, rel, '..'), { recursive: true });
    writeFileSync(join(root, rel), content);
  }
  return root;
}

test('this machine: sane layout with existing paths and a freezer', () => {
  const l = detectCgroupLayout();
  assert.equal(l.root, '/sys/fs/cgroup');
  assert.notEqual(l.freezer, null, 'no freezer found');
  for (const p of [l.v2, l.v1Freezer, l.v1Memory]) if (p !== null) assert.ok(existsSync(p), p);
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    assert.equal(l.mode, 'unified');
    assert.equal(l.v2, '/sys/fs/cgroup');
    assert.equal(l.v1Freezer, null);
  } else if (existsSync('/sys/fs/cgroup/unified/cgroup.controllers')) {
    assert.equal(l.mode, 'hybrid');
    assert.equal(l.v2, '/sys/fs/cgroup/unified');
    // Hybrid with no v2 memory controller: limits must come from v1.
    if (!l.v2Controllers.includes('memory') && existsSync('/sys/fs/cgroup/memory/tasks')) {
      assert.equal(l.memory, 'v1');
      assert.equal(l.v1Memory, '/sys/fs/cgroup/memory');
    }
    if (existsSync('/sys/fs/cgroup/freezer/tasks'))
      assert.equal(l.v1Freezer, '/sys/fs/cgroup/freezer');
  }
  assert.equal(l.freezer === 'v2', l.v2CanFreeze);
});

test('pure v2: memory from v2 when the controller is available', async () => {
  const root = await fakeRoot({
    'cgroup.controllers': 'cpuset cpu io memory pids\n',
    'system.slice/cgroup.procs': '',
    'system.slice/cgroup.freeze': '0',
  });
  const l = detectCgroupLayout(root);
  assert.equal(l.mode, 'unified');
  assert.equal(l.v2, root);
  assert.deepEqual(l.v2Controllers, ['cpuset', 'cpu', 'io', 'memory', 'pids']);
  assert.equal(l.v2CanFreeze, true);
  assert.equal(l.freezer, 'v2');
  assert.equal(l.memory, 'v2');
  assert.equal(l.v1Freezer, null);
  assert.equal(l.v1Memory, null);
});

test('hybrid: v2 freezer when cgroup.freeze exists, v1 memory when v2 has no controllers', async () => {
  const root = await fakeRoot({
    'unified/cgroup.controllers': '\n',
    'unified/init.scope/cgroup.procs': '',
    'unified/init.scope/cgroup.freeze': '0',
    'freezer/tasks': '',
    'memory/tasks': '',
  });
  const l = detectCgroupLayout(root);
  assert.equal(l.mode, 'hybrid');
  assert.equal(l.v2, join(root, 'unified'));
  assert.deepEqual(l.v2Controllers, []);
  assert.equal(l.freezer, 'v2');
  assert.equal(l.memory, 'v1');
  assert.equal(l.v1Freezer, join(root, 'freezer'));
  assert.equal(l.v1Memory, join(root, 'memory'));
});

test('hybrid on an old kernel: v1 freezer when v2 cgroups lack cgroup.freeze', async () => {
  const root = await fakeRoot({
    'unified/cgroup.controllers': '',
    'unified/init.scope/cgroup.procs': '',
    'freezer/tasks': '',
  });
  const l = detectCgroupLayout(root);
  assert.equal(l.v2CanFreeze, false);
  assert.equal(l.freezer, 'v1');
  assert.equal(l.memory, null);
});

test('legacy v1 only', async () => {
  const root = await fakeRoot({ 'freezer/tasks': '', 'memory/tasks': '', 'cpu/tasks': '' });
  const l = detectCgroupLayout(root);
  assert.equal(l.mode, 'legacy');
  assert.equal(l.v2, null);
  assert.equal(l.freezer, 'v1');
  assert.equal(l.memory, 'v1');
});

test('kernelAtLeast', () => {
  assert.ok(kernelAtLeast('6.18.44-fc', 5, 2));
  assert.ok(kernelAtLeast('5.2.0', 5, 2));
  assert.ok(!kernelAtLeast('5.1.9', 5, 2));
  assert.ok(!kernelAtLeast('4.19.0', 5, 2));
  assert.ok(!kernelAtLeast('garbage', 5, 2));
});
