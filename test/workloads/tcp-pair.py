"""Two ends of one TCP connection exchanging a counter every 10 ms, each checking every value.

  python3 tcp-pair.py --role server --port P
  python3 tcp-pair.py --role client --connect HOST:PORT

The client sends n (1, 2, 3, ...), the server checks it is exactly the next number and echoes it,
the client checks the echo. Neither ever reconnects: a broken, reset or out-of-order connection
prints `FAIL <why>` and exits 3. Every second each prints
`count=<n> local=<addr:port> remote=<addr:port> accepts=<k>` on stdout, so a test reading the
job's log sees the same connection (same ports) counting up across any number of moves. A server
that accepts a second connection says so (`accepts` goes up).
"""
import socket
import sys
import time


def parse(argv):
    out = {}
    for i in range(0, len(argv), 2):
        out[argv[i].lstrip('-')] = argv[i + 1]
    return out


def fail(why):
    print(f'FAIL {why}', flush=True)
    sys.exit(3)


def lines(sock):
    buf = b''
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            fail('the peer closed the connection')
        buf += chunk
        while b'\n' in buf:
            line, buf = buf.split(b'\n', 1)
            yield line.decode()


def report(n, sock, accepts):
    l, r = sock.getsockname(), sock.getpeername()
    print(f'count={n} local={l[0]}:{l[1]} remote={r[0]}:{r[1]} accepts={accepts}', flush=True)


def serve(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(('0.0.0.0', port))
    ls.listen(4)
    print(f'listening on {port}', flush=True)
    conn, _ = ls.accept()
    accepts = 1
    ls.setblocking(False)
    expected, last = 1, 0.0
    for line in lines(conn):
        try:
            extra, _ = ls.accept()
            accepts += 1
            extra.close()
            report(expected - 1, conn, accepts)
        except BlockingIOError:
            pass
        if int(line) != expected:
            fail(f'got {line}, expected {expected}')
        conn.sendall(f'{line}\n'.encode())
        expected += 1
        if time.time() - last >= 1:
            last = time.time()
            report(expected - 1, conn, accepts)


def connect(target):
    host, port = target.rsplit(':', 1)
    sock = None
    for _ in range(200):  # the server may still be starting
        try:
            sock = socket.create_connection((host, int(port)), timeout=2)
            break
        except OSError:
            time.sleep(0.05)
    if sock is None:
        fail(f'cannot connect to {target}')
    sock.settimeout(None)
    print(f'connected to {target}', flush=True)
    n, last = 0, 0.0
    replies = lines(sock)
    while True:
        n += 1
        sock.sendall(f'{n}\n'.encode())
        echo = next(replies)
        if int(echo) != n:
            fail(f'echo {echo}, expected {n}')
        if time.time() - last >= 1:
            last = time.time()
            report(n, sock, 1)
        time.sleep(0.01)


def main():
    a = parse(sys.argv[1:])
    try:
        if a.get('role') == 'server':
            serve(int(a['port']))
        elif a.get('role') == 'client':
            connect(a['connect'])
        else:
            fail('--role server|client')
    except (ConnectionError, OSError) as e:
        fail(f'{type(e).__name__}: {e}')


main()
