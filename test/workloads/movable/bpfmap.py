"""A BPF array map (CRIU dumps BPF maps when it is built with libbpf): every value must survive.

Made with the bpf(2) system call through ctypes (x86_64 number 321): BPF_MAP_CREATE of a
16-entry array of u64, seeded values, and one value changed after each check.
"""
import ctypes
import os
import struct
from probe import serve

libc = ctypes.CDLL(None, use_errno=True)
SYS_BPF = 321
MAP_CREATE, MAP_LOOKUP, MAP_UPDATE = 0, 1, 2
ARRAY = 2
ENTRIES = 16


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = libc.syscall(SYS_BPF, cmd, buf, 128)
    if r < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return r


map_fd = bpf(MAP_CREATE, struct.pack('IIII', ARRAY, 4, 8, ENTRIES))


def elem(cmd, key, value=None):
    k = ctypes.c_uint32(key)
    v = ctypes.c_uint64(value or 0)
    attr = struct.pack('I4xQQQ', map_fd, ctypes.addressof(k), ctypes.addressof(v), 0)
    bpf(cmd, attr)
    return v.value


values = [(i * 2654435761) & 0xFFFFFFFFFFFF for i in range(ENTRIES)]
for i, v in enumerate(values):
    elem(MAP_UPDATE, i, v)
n = 0


def verify():
    global n
    problems = [f'[{i}] = {elem(MAP_LOOKUP, i)}, expected {v}' for i, v in enumerate(values) if elem(MAP_LOOKUP, i) != v]
    i = n % ENTRIES
    n += 1
    values[i] += 1
    elem(MAP_UPDATE, i, values[i])
    return problems


serve('bpfmap', verify, f'fd {map_fd}')
