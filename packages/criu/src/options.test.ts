import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import {
  compileDumpOptions,
  compilePageServerOptions,
  compileRestoreOptions,
  pageServerEnv,
} from './options.js';
import { CgroupMode, NetworkLock } from './rpc-schema.js';

test('dump options compile to criu_opts', () => {
  const o = compileDumpOptions({
    pid: 100,
    imagesDir: '/x',
    leaveRunning: true,
    tcpEstablished: true,
    externals: ['mnt[]'],
    freezeCgroup: '/sys/fs/cgroup/unified/drover/j',
    parentImages: '../1',
    pageServer: { address: '10.0.0.1', port: 1234 },
    manageCgroups: 'soft',
    timeoutSec: 30,
  });
  assert.equal(o.pid, 100);
  assert.equal(o.images_dir_fd, -1);
  assert.equal(o.images_dir, '/proc/self/fd/4');
  assert.equal(o.log_file, 'dump.log');
  assert.equal(o.leave_running, true);
  assert.equal(o.tcp_established, true);
  assert.deepEqual(o.external, ['mnt[]']);
  assert.equal(o.freeze_cgroup, '/sys/fs/cgroup/unified/drover/j');
  assert.equal(o.parent_img, '../1');
  assert.deepEqual(o.ps, { address: '10.0.0.1', port: 1234 });
  assert.equal(o.manage_cgroups_mode, CgroupMode.soft);
  assert.equal(o.network_lock, NetworkLock.nftables);
  assert.equal(o.notify_scripts, true);
  assert.equal(o.timeout, 30);
  assert.equal(o.shell_job, undefined);
});

test('restore options compile to criu_opts', () => {
  const o = compileRestoreOptions({
    imagesDir: '/x',
    root: '/',
    leaveStopped: true,
    rstSibling: true,
    cgroupRoots: [{ path: '/a' }, { controller: 'freezer', path: '/b' }],
    inheritFds: [{ key: 'pipe:[1]', fd: 5 }],
    networkLock: 'skip',
    logFile: 'r.log',
  });
  assert.equal(o.root, '/');
  assert.equal(o.leave_stopped, true);
  assert.equal(o.rst_sibling, true);
  assert.deepEqual(o.cg_root, [{ path: '/a' }, { ctrl: 'freezer', path: '/b' }]);
  assert.deepEqual(o.inherit_fd, [{ key: 'pipe:[1]', fd: 5 }]);
  assert.equal(o.network_lock, NetworkLock.skip);
  assert.equal(o.notify_scripts, true, 'notifications by default');
  assert.equal(o.log_file, 'r.log');
  assert.equal(o.pid, undefined);
});

test('bad options are refused with INVALID_ARGUMENT', () => {
  const bad = [
    () => compileDumpOptions({ pid: 0, imagesDir: '/x' }),
    () => compileDumpOptions({ pid: 1.5, imagesDir: '/x' }),
    () => compileDumpOptions({ pid: 1, imagesDir: '/x', logFile: '../escape.log' }),
    () => compileDumpOptions({ pid: 1, imagesDir: '/x', timeoutSec: -1 }),
    () => compilePageServerOptions({ imagesDir: '/x', address: '127.0.0.1', port: 70000 }),
    () => compileRestoreOptions({ imagesDir: '/x', pageServer: { address: '', port: 1 } }),
  ];
  for (const f of bad) {
    assert.throws(f, (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'));
  }
});

test("a job's checkpoint options compile to their criu_opts fields and survive encoding", async () => {
  const { decodeRequest, encodeRequest, ReqType } = await import('./rpc-schema.js');
  const d = compileDumpOptions({
    pid: 7,
    imagesDir: '/x',
    fileLocks: true,
    linkRemap: true,
    ghostLimitBytes: 64 * 1024 * 1024,
    evasiveDevices: true,
  });
  assert.equal(d.file_locks, true);
  assert.equal(d.link_remap, true);
  assert.equal(d.ghost_limit, 64 * 1024 * 1024);
  assert.equal(d.evasive_devices, true);
  const r = compileRestoreOptions({ imagesDir: '/x', tcpClose: true, weakSysctls: true });
  assert.equal(r.tcp_close, true);
  assert.equal(r.weak_sysctls, true);
  assert.equal(r.link_remap, undefined);
  const back = decodeRequest(encodeRequest({ type: ReqType.DUMP, opts: d }));
  assert.equal(back.opts?.ghost_limit, 64 * 1024 * 1024);
  assert.equal(back.opts?.link_remap, true);
  assert.equal(back.opts?.evasive_devices, true);
  const back2 = decodeRequest(encodeRequest({ type: ReqType.RESTORE, opts: r }));
  assert.equal(back2.opts?.tcp_close, true);
  assert.equal(back2.opts?.weak_sysctls, true);
  assert.throws(
    () => compileDumpOptions({ pid: 7, imagesDir: '/x', ghostLimitBytes: 2 ** 32 }),
    (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'),
  );
});

test('a TLS page server gets a huge-page heap; a plain one the environment as it is', () => {
  const ps = { imagesDir: '/x', address: '10.0.0.2', port: 1234 };
  const tls = { caFile: 'ca', certFile: 'c', keyFile: 'k', noCnVerify: true };
  const base = { PATH: '/usr/bin' };
  assert.equal(pageServerEnv(ps, base), base);
  assert.deepEqual(pageServerEnv({ ...ps, tls }, base), {
    PATH: '/usr/bin',
    GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1',
  });
  // Other tunables stay; one the operator set for the heap wins.
  assert.equal(
    pageServerEnv({ ...ps, tls }, { GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }).GLIBC_TUNABLES,
    'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1',
  );
  const mine = { GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' };
  assert.equal(pageServerEnv({ ...ps, tls }, mine), mine);
});

test('a caller without hooks can restore without NOTIFY round trips', () => {
  assert.equal(compileRestoreOptions({ imagesDir: '/x', notify: false }).notify_scripts, false);
  assert.equal(compileRestoreOptions({ imagesDir: '/x', notify: true }).notify_scripts, true);
});
