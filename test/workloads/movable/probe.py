"""What every program here shares: say READY, verify on SIGUSR1, end on SIGTERM (see README.md).

A program states its name, its PID as the job sees it and what it set up in one `READY` line of
its standard output (the job's log). Each SIGUSR1 makes it check all of its state and print
`OK <name> <n> <pid>` or `FAIL <name> <n> <pid>: <what is wrong>`, n counting from 1. SIGTERM makes
it print `TERM <name> <pid>` and exit 0. Signals are handled in the main loop, never inside the
handler, so a check never races its own setup.
"""
import os
import signal
import sys
import time


def say(*words):
    print(' '.join(str(w) for w in words), flush=True)


def serve(name, verify, info='', tick=None):
    """Run forever: `verify()` returns a list of problems; `tick()` (optional) runs every 50 ms."""
    pending = []
    signal.signal(signal.SIGUSR1, lambda *_: pending.append('verify'))
    signal.signal(signal.SIGTERM, lambda *_: pending.append('term'))
    say('READY', name, os.getpid(), info)
    n = 0
    while True:
        while pending:
            what = pending.pop(0)
            if what == 'term':
                say('TERM', name, os.getpid())
                sys.exit(0)
            n += 1
            try:
                problems = verify()
            except Exception as e:  # a check that cannot run is a failed check
                problems = [f'{type(e).__name__}: {e}']
            if problems:
                say('FAIL', name, n, os.getpid(), '; '.join(problems) + ':')
            else:
                say('OK', name, n, os.getpid())
        if tick:
            tick()
        time.sleep(0.05)


def job_dir():
    return os.environ.get('DROVER_JOB_DIR') or os.getcwd()
