"""Run with a terminal (`drover run -t`): its stdio is a pty of the job, its controlling terminal.

Each line it reads from the terminal (`drover attach` sends them) it prints back as `GOT <line>`.
"""
import os
import select
from probe import say, serve

name = os.ttyname(0)
pending = b''


def verify():
    problems = []
    for fd in (0, 1, 2):
        if not os.isatty(fd):
            problems.append(f'fd {fd} is not a terminal')
    if os.ttyname(1) != name:
        problems.append(f'stdout is {os.ttyname(1)}, was {name}')
    try:  # only on its controlling terminal has it a foreground process group
        if os.tcgetpgrp(0) != os.getpgrp():
            problems.append(f'the foreground group of {name} is {os.tcgetpgrp(0)}, not ours')
    except OSError as e:
        problems.append(f'{name} is not its controlling terminal: {e}')
    return problems


def tick():
    global pending
    while select.select([0], [], [], 0)[0]:
        pending += os.read(0, 4096)
    while b'\n' in pending:
        line, pending = pending.split(b'\n', 1)
        say('GOT', line.decode(errors='replace'))


serve('tty', verify, name, tick)
