"""A pseudo-terminal pair of the job's own (its devpts): numbers, settings and queued bytes.

Checks: the slave keeps its name (/dev/pts/N of the job's own devpts, where N starts at 0),
its terminal settings, and bytes written to the master before the move but not yet read; a
new round trip works; /dev/pts holds the job's terminal alone (a devpts of its own).
"""
import os
import select
import termios
from probe import serve

master, slave = os.openpty()
name = os.ttyname(slave)
attrs = termios.tcgetattr(slave)
attrs[3] &= ~termios.ECHO  # lflag: a setting the restore must keep
termios.tcsetattr(slave, termios.TCSANOW, attrs)
queued = [b'queued 0\n']
os.write(master, queued[0])


def read_ready(fd):
    """What `fd` has to read within 2 s (b'' if nothing: a check must not hang)."""
    return os.read(fd, 4096) if select.select([fd], [], [], 2)[0] else b''


def verify():
    problems = []
    if os.ttyname(slave) != name:
        problems.append(f'slave is {os.ttyname(slave)}, was {name}')
    if termios.tcgetattr(slave)[3] & termios.ECHO:
        problems.append('ECHO came back on')
    got = read_ready(slave)
    if got != b''.join(queued):
        problems.append(f'read {got!r}, expected {b"".join(queued)!r}')
    os.write(slave, b'pong\n')
    back = read_ready(master)
    if b'pong' not in back:
        problems.append(f'master read {back!r}')
    # The job's own devpts: its terminals and nobody else's (the host's would list many more).
    mine = sorted(os.listdir('/dev/pts'))
    if mine != sorted([name.rsplit('/', 1)[1], 'ptmx']):
        problems.append(f'/dev/pts holds {mine}')
    queued.clear()
    queued.append(f'queued {os.getpid()}\n'.encode())
    os.write(master, queued[0])
    return problems


serve('pty', verify, name)
