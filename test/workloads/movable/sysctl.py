"""A per-network-namespace sysctl the job set (net.ipv4.ping_group_range) and what it allows.

Root may open ICMP datagram ("ping") sockets only when its group is in the range, so the
check opens a new one, and pings loopback through the one made at the start.
"""
import os
import socket
import struct
from probe import serve

PATH = '/proc/sys/net/ipv4/ping_group_range'
WANT = '0\t2147483647'
with open(PATH, 'w') as f:
    f.write('0 2147483647')
ping = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
ping.settimeout(5)
seq = 0


def echo(sock):
    global seq
    seq += 1
    body = b'drover'
    sock.sendto(struct.pack('!BBHHH', 8, 0, 0, 0, seq) + body, ('127.0.0.1', 0))
    reply, _ = sock.recvfrom(1024)
    return reply[0] == 0 and reply[8:] == body


def verify():
    problems = []
    with open(PATH) as f:
        got = f.read().strip()
    if got != WANT:
        problems.append(f'ping_group_range is {got!r}')
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        s.close()
    except OSError as e:
        problems.append(f'a new ping socket: {e}')
    try:
        if not echo(ping):
            problems.append('no echo reply')
    except OSError as e:
        problems.append(f'ping through the old socket: {e}')
    return problems


serve('sysctl', verify)
