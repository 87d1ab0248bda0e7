"""An open file whose name is gone but that has another link (CRIU's --link-remap).

It opens `remap-a`, links it as `remap-b`, removes `remap-a`. Checks: the fd and `remap-b` are
still one file (writes through the fd show in remap-b, same inode), one link, contents kept.
"""
import os
from probe import job_dir, serve

d = job_dir()
a, b = os.path.join(d, 'remap-a'), os.path.join(d, 'remap-b')
fd = os.open(a, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, b'line 0\n')
os.link(a, b)
os.unlink(a)
lines = [b'line 0\n']


def verify():
    problems = []
    st = os.fstat(fd)
    if st.st_nlink != 1:
        problems.append(f'{st.st_nlink} links, expected 1 (remap-b)')
    if os.path.exists(a):
        problems.append('remap-a came back')
    try:
        sb = os.stat(b)
        if (sb.st_dev, sb.st_ino) != (st.st_dev, st.st_ino):
            problems.append('remap-b is not the open file any more')
    except FileNotFoundError:
        problems.append('remap-b is gone')
    line = f'line {len(lines)}\n'.encode()
    os.pwrite(fd, line, sum(len(l) for l in lines))
    lines.append(line)
    with open(b, 'rb') as f:
        if f.read() != b''.join(lines):
            problems.append('remap-b does not show what was written through the fd')
    return problems


serve('linkremap', verify)
