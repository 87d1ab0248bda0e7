"""Plain Python workload: a counter and a dict of accumulated values, re-derived on verify."""
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib'))
from contract import Workload, mix32, parse_args  # noqa: E402

opts = parse_args(sys.argv[1:], {'seed': '1', 'keys': '97'})
seed = int(opts['seed'])
keys = int(opts['keys'])
w = Workload('python', opts['dir'])
counter = 0
values = {}


def apply(d, n):
    """Step n adds a seeded amount to one key; replaying steps 1..n gives the expected dict."""
    key = f'k{n % keys}'
    d[key] = d.get(key, 0) + mix32(seed ^ n) % 1000


def verify():
    expected = {}
    for n in range(1, counter + 1):
        apply(expected, n)
    problems = []
    if len(expected) != len(values):
        problems.append(f'{len(values)} keys, expected {len(expected)}')
    for k, v in expected.items():
        if values.get(k) != v:
            problems.append(f'{k}={values.get(k)}, expected {v}')
    return len(expected) + 1, problems, counter


def corrupt():
    values['k0'] = values.get('k0', 0) + 1


w.verifier = verify
w.corrupter = corrupt
w.ready()
if opts.get('fail_verify') is True:
    w.want_corrupt += 1
next_at = time.monotonic()
while True:
    counter += 1
    apply(values, counter)
    w.beat(counter)
    w.poll()
    next_at += 0.05
    delay = next_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    else:
        next_at = time.monotonic()  # after a freeze, don't replay the missed steps in a burst
