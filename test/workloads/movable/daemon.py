"""A launcher that daemonises (double fork, setsid) and exits 0, as `redis-server --daemonize yes`.

Argument: the pidfile path. The daemon writes its PID there, then serves (probe.py) with a
counter it advances every 50 ms; its check is that the counter never went backwards.
"""
import os
import sys
import time
from probe import serve

pidfile = sys.argv[1]
if os.fork() > 0:
    time.sleep(0.2)  # let the daemon write its pidfile, as real launchers wait for their child
    sys.exit(0)
os.setsid()
if os.fork() > 0:
    os._exit(0)
with open(pidfile + '.tmp', 'w') as f:
    f.write(f'{os.getpid()}\n')
os.rename(pidfile + '.tmp', pidfile)
state = {'n': 0, 'seen': 0, 't0': time.monotonic()}


def tick():
    state['n'] += 1


def verify():
    problems = []
    if state['n'] < state['seen']:
        problems.append(f'counter went back from {state["seen"]} to {state["n"]}')
    if os.getppid() == 0:
        problems.append('no parent')
    state['seen'] = state['n']
    return problems


serve('daemon', verify, pidfile, tick)
