"""A large unlinked open file (a "ghost file": CRIU carries its contents, up to --ghost-limit).

Argument: its size in MiB (default 8). Checks: the file behind the fd has no name left, its
size, and every byte (a seeded pattern); it is written to after each check, so a move that
restored an old copy is caught.
"""
import hashlib
import os
import sys
from probe import job_dir, serve

mib = int(sys.argv[1]) if len(sys.argv) > 1 else 8
path = os.path.join(job_dir(), 'ghost.bin')


def block(i, gen):
    return hashlib.sha256(f'{i}:{gen}'.encode()).digest() * 32768  # 1 MiB


fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
for i in range(mib):
    os.write(fd, block(i, 0))
os.unlink(path)
gens = [0] * mib
n = 0


def verify():
    global n
    problems = []
    st = os.fstat(fd)
    if st.st_nlink != 0:
        problems.append(f'the file has {st.st_nlink} links, expected none')
    if st.st_size != mib << 20:
        problems.append(f'size {st.st_size}, expected {mib << 20}')
    for i in range(mib):
        if os.pread(fd, 1 << 20, i << 20) != block(i, gens[i]):
            problems.append(f'MiB {i} differs')
            break
    # Change one block: the next check expects the new contents.
    i = n % mib
    n += 1
    gens[i] += 1
    os.pwrite(fd, block(i, gens[i]), i << 20)
    return problems


serve('ghost', verify, f'{mib}MiB')
