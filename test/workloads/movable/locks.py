"""File locks and a lease (CRIU's --file-locks): a flock, a POSIX record lock and a read lease.

Its files are in the job's directory, or in the directory given as its argument (storage every
host mounts, where the frozen original's locks hold up the restore).

Checks: /proc/self/fdinfo still lists each lock on its fd, F_GETLEASE still says F_RDLCK, and
a child that tries the same locks without waiting is refused (they are really held).
"""
import fcntl
import os
import sys
from probe import job_dir, serve

d = sys.argv[1] if len(sys.argv) > 1 else job_dir()
paths = [os.path.join(d, f'locks-{k}') for k in ('flock', 'posix', 'lease')]
for p in paths:
    with open(p, 'w') as f:
        f.write('locked\n')
flock_fd = os.open(paths[0], os.O_RDWR)
fcntl.flock(flock_fd, fcntl.LOCK_EX)
posix_fd = os.open(paths[1], os.O_RDWR)
fcntl.lockf(posix_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 3, 2)
lease_fd = os.open(paths[2], os.O_RDONLY)
fcntl.fcntl(lease_fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)


def lock_lines(fd):
    with open(f'/proc/self/fdinfo/{fd}') as f:
        return [l for l in f.read().splitlines() if l.startswith('lock:')]


def refused_in_child(path, how):
    """True if a child process cannot take the lock `how` on `path` without waiting."""
    pid = os.fork()
    if pid == 0:
        fd = os.open(path, os.O_RDWR)
        try:
            if how == 'flock':
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 3, 2)
        except OSError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def verify():
    problems = []
    for fd, kind in ((flock_fd, 'FLOCK'), (posix_fd, 'POSIX'), (lease_fd, 'LEASE')):
        lines = lock_lines(fd)
        if not any(kind in l for l in lines):
            problems.append(f'fd {fd} has no {kind} lock ({lines})')
    lease = fcntl.fcntl(lease_fd, fcntl.F_GETLEASE)
    if lease != fcntl.F_RDLCK:
        problems.append(f'lease is {lease}, not F_RDLCK')
    if not refused_in_child(paths[0], 'flock'):
        problems.append('another process could take the flock')
    if not refused_in_child(paths[1], 'posix'):
        problems.append('another process could take the record lock')
    return problems


serve('locks', verify)
