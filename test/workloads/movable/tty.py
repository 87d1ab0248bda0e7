"""Run with a terminal (`drover run -t`): its stdio is a pty of the job with it as controlling tty."""
import os
from probe import serve

name = os.ttyname(0)


def verify():
    problems = []
    for fd in (0, 1, 2):
        if not os.isatty(fd):
            problems.append(f'fd {fd} is not a terminal')
    if os.ttyname(1) != name:
        problems.append(f'stdout is {os.ttyname(1)}, was {name}')
    if os.tcgetsid(0) != os.getsid(0):
        problems.append('the terminal is not its controlling terminal')
    return problems


serve('tty', verify, name)
