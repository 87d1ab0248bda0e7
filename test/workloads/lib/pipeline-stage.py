"""One stage of the pipeline workload: producer, filter or consumer (see ../pipeline.sh)."""
import os
import select
import signal
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from contract import Workload, mix32, now_ms, parse_args  # noqa: E402

role = sys.argv[1]
opts = parse_args(sys.argv[2:], {'seed': '1'})
seed = int(opts['seed'])
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # a dead neighbour ends the stage quietly


def write_pid():
    path = os.path.join(opts['dir'], f'pipeline-{role}.pid')
    with open(path, 'w') as f:
        f.write(f'{os.getpid()}\n')


def producer():
    """Write `seq check` lines, 5 every 10 ms."""
    seq = 0
    while True:
        lines = []
        for _ in range(5):
            seq += 1
            lines.append(f'{seq} {mix32(seed ^ seq)}\n')
        os.write(1, ''.join(lines).encode())
        time.sleep(0.01)


def filter_():
    """Check each line's own checksum and append a second field derived from the sequence."""
    for line in sys.stdin.buffer:
        seq, check = line.split()
        tag = mix32(int(seq) * 3) if mix32(seed ^ int(seq)) == int(check) else 0
        os.write(1, line.rstrip(b'\n') + f' {tag}\n'.encode())


def consumer():
    """Check that the sequence arrives unbroken; answer the contract for the whole pipeline."""
    w = Workload('pipeline', opts['dir'], pid=int(opts['root_pid']))
    state = {'last': 0, 'received': 0, 'problems': []}

    def take(line):
        seq, check, tag = (int(x) for x in line.split())
        if seq != state['last'] + 1 and len(state['problems']) < 5:
            state['problems'].append(f"sequence broke: {seq} after {state['last']}")
        if (check != mix32(seed ^ seq) or tag != mix32(seq * 3)) and len(state['problems']) < 5:
            state['problems'].append(f'line {seq} arrived damaged')
        state['last'] = seq
        state['received'] += 1

    def verify():
        problems, state['problems'] = state['problems'], []
        checks = 3
        # Unbroken from 1 means the last sequence number equals the number of lines received.
        if state['last'] != state['received']:
            problems.append(f"last line {state['last']} but {state['received']} lines received")
        # The other stages must still run and still be joined to us by the same two pipes.
        try:
            inode = {}
            for other in ('producer', 'filter'):
                with open(os.path.join(w.dir, f'pipeline-{other}.pid')) as f:
                    pid = int(f.read())
                for fd in (0, 1):
                    inode[other, fd] = os.stat(f'/proc/{pid}/fd/{fd}').st_ino
            checks += 2
            if inode['producer', 1] != inode['filter', 0]:
                problems.append('producer stdout is not filter stdin')
            if inode['filter', 1] != os.fstat(0).st_ino:
                problems.append('filter stdout is not consumer stdin')
        except (OSError, ValueError) as e:
            problems.append(f'cannot inspect the other stages: {e}')
        return checks, problems, state['last']

    def corrupt():
        state['last'] += 7  # the next line now looks like a gap

    w.verifier = verify
    w.corrupter = corrupt
    pending = b''
    while state['last'] == 0:  # ready once data flows
        pending += os.read(0, 65536)
        while b'\n' in pending:
            line, pending = pending.split(b'\n', 1)
            take(line)
    w.ready()
    if opts.get('fail_verify') is True:
        w.want_corrupt += 1
    next_beat = 0
    while True:
        r, _, _ = select.select([0], [], [], 0.05)
        if r:
            data = os.read(0, 65536)
            if not data:
                return
            pending += data
            while b'\n' in pending:
                line, pending = pending.split(b'\n', 1)
                take(line)
        if now_ms() >= next_beat:
            w.beat(state['last'])
            next_beat = now_ms() + 50
        w.poll()


write_pid()
{'producer': producer, 'filter': filter_, 'consumer': consumer}[role]()
