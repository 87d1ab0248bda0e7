"""A main process among siblings that come back from a restore in another order.

Before it says READY it leaves behind orphans (they become children of the job's init, beside
the wrapper) and children of its own. Every process prints who got a SIGUSR1: only the main
process may (the others print `STRAY <pid>`, which the test refuses).
"""
import os
import signal
import sys
import time
from probe import say, serve


def stray(*_):
    say('STRAY', os.getpid())


def linger():
    signal.signal(signal.SIGUSR1, stray)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        time.sleep(1)


for _ in range(2):  # orphans: each child forks a grandchild and exits
    if os.fork() == 0:
        if os.fork() == 0:
            linger()
        os._exit(0)
    os.wait()
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        linger()
    kids.append(pid)


def verify():
    alive = [k for k in kids if os.waitpid(k, os.WNOHANG) == (0, 0)]
    return [] if alive == kids else [f'children {kids}, alive {alive}']


serve('reorder', verify)
