"""The workload contract for Python workloads (mirror of contract.mjs; see ../README.md)."""
import json
import os
import signal
import sys
import time


def parse_args(argv, defaults):
    """Parse `--key value` and bare `--flag` arguments (`--fail-verify` -> fail_verify)."""
    out = dict(defaults)
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith('--'):
            raise SystemExit(f'unexpected argument {a}')
        key = a[2:].replace('-', '_')
        if i + 1 < len(argv) and not argv[i + 1].startswith('--'):
            out[key] = argv[i + 1]
            i += 2
        else:
            out[key] = True
            i += 1
    if not isinstance(out.get('dir'), str):
        raise SystemExit('--dir <workdir> is required')
    return out


def now_ms():
    return int(time.time() * 1000)


def write_atomic(path, text):
    tmp = os.path.join(os.path.dirname(path), f'.{os.path.basename(path)}.{os.getpid()}.tmp')
    with open(tmp, 'w') as f:
        f.write(text)
    os.rename(tmp, path)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def mix32(x):
    """32-bit integer hash (lowbias32), identical to contract.mjs."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


def check_history(d, counter, seq):
    """Every heartbeat and the last verdict on disk must be at or behind counter and seq."""
    problems = []
    checks = 0
    prev = -1
    try:
        with open(os.path.join(d, 'heartbeat.log')) as f:
            for line_no, line in enumerate(f, 1):
                try:
                    n = json.loads(line)['n']
                except ValueError:
                    continue  # a torn last line after a kill is not a state problem
                checks += 1
                if n < prev:
                    problems.append(f'heartbeat line {line_no} went backwards ({n} after {prev})')
                if n > counter:
                    problems.append(f'heartbeat line {line_no} has n={n} > counter {counter}')
                prev = max(prev, n)
                if len(problems) > 5:
                    break
    except FileNotFoundError:
        problems.append('heartbeat.log is missing')
    last = read_json(os.path.join(d, 'verdict.json'))
    if last is not None:
        checks += 1
        if not last['seq'] < seq:
            problems.append(f"previous verdict seq {last['seq']} >= this seq {seq}")
        if last.get('counter') is not None and last['counter'] > counter:
            problems.append(f"previous verdict counter {last['counter']} > counter {counter}")
    return checks, problems


class Workload:
    """One workload's side of the contract. Signal handlers only set flags; `poll()` acts on them
    from the main loop, so verification never runs in the middle of a step."""

    def __init__(self, name, d, pid=None):
        self.name = name
        self.dir = os.path.abspath(d)
        self.pid = pid if pid is not None else os.getpid()
        self.seq = 0
        self.started_at = now_ms()
        self.hb = os.open(os.path.join(self.dir, 'heartbeat.log'),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self.want_verify = 0
        self.want_corrupt = 0
        self.verifier = None
        self.corrupter = None

    def beat(self, counter):
        os.write(self.hb, f'{{"t":{now_ms()},"n":{counter}}}\n'.encode())

    def ready(self, **extra):
        signal.signal(signal.SIGUSR1, self._on_usr1)
        signal.signal(signal.SIGUSR2, self._on_usr2)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        info = {'pid': self.pid, 'name': self.name, 'startedAt': self.started_at, **extra}
        write_atomic(os.path.join(self.dir, 'ready'), json.dumps(info) + '\n')

    def _on_usr1(self, *_):
        self.want_verify += 1

    def _on_usr2(self, *_):
        self.want_corrupt += 1

    def poll(self):
        """Run pending corruption and verification requests, in arrival order per kind."""
        while self.want_corrupt:
            self.want_corrupt -= 1
            self.corrupter()
            self.corruptions = getattr(self, 'corruptions', 0) + 1
            write_atomic(os.path.join(self.dir, 'corrupted'),
                         json.dumps({'n': self.corruptions, 'at': now_ms()}) + '\n')
        while self.want_verify:
            self.want_verify -= 1
            self.verify()

    def verify(self):
        self.seq += 1
        try:
            checks, problems, counter = self.verifier()
        except Exception as e:  # a crashing verifier is a failed verification
            checks, problems, counter = 1, [f'verifier raised {e!r}'], None
        if counter is not None:
            c, p = check_history(self.dir, counter, self.seq)
            checks += c
            problems = problems + p
        verdict = {'ok': not problems, 'name': self.name, 'seq': self.seq, 'checks': checks,
                   'details': '; '.join(problems[:10]) if problems else f'{checks} checks passed',
                   'at': now_ms()}
        if counter is not None:
            verdict['counter'] = counter
        write_atomic(os.path.join(self.dir, 'verdict.json'), json.dumps(verdict) + '\n')
