"""Clients that must work unmodified through the funnel: each fetches one HTTP response from
127.0.0.1:PORT and prints one JSON line per connection: the peer getpeername() reports and the body."""
import asyncio
import errno
import json
import os
import select
import socket
import sys
import threading

HOST = "127.0.0.1"
OUT = threading.Lock()
REQ = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def read_all(s):
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            return data
        data += b


def body(data):
    return data.split(b"\r\n\r\n", 1)[1].decode()


def report(how, peer, data, **extra):
    line = {"how": how, "peer": [peer[0], peer[1]], "body": body(data)}
    line.update(extra)
    with OUT:  # one whole line per connection, even from threads
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


def blocking(port, how="blocking"):
    s = socket.create_connection((HOST, port), timeout=10)
    peer = s.getpeername()
    s.sendall(REQ)
    report(how, peer, read_all(s))
    s.close()


async def with_asyncio(port):
    reader, writer = await asyncio.open_connection(HOST, port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    peer = sock.getpeername()
    writer.write(REQ)
    await writer.drain()
    data = await reader.read()
    writer.close()
    report("asyncio", peer, data, nodelay=nodelay)


def nonblocking_poll(port):
    s = socket.socket()
    s.setblocking(False)
    rc = s.connect_ex((HOST, port))
    p = select.poll()
    p.register(s, select.POLLOUT)
    events = p.poll(10000)
    so_error = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    s.setblocking(True)
    peer = s.getpeername()
    s.sendall(REQ)
    report("poll", peer, read_all(s), connect=errno.errorcode.get(rc, str(rc)), ready=bool(events), so_error=so_error)


def threads(port, n=8):
    barrier = threading.Barrier(n)
    errors = []

    def one():
        try:
            barrier.wait()
            blocking(port, "thread")
        except Exception as e:  # reported, so the test sees which thread failed
            errors.append(repr(e))

    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        print(json.dumps({"errors": errors}), flush=True)
        sys.exit(1)


def forked(port):
    pid = os.fork()
    if pid == 0:
        try:
            blocking(port, "child")
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    blocking(port, "parent")
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "asyncio":
        asyncio.run(with_asyncio(port))
    else:
        {"blocking": blocking, "poll": nonblocking_poll, "threads": threads, "fork": forked}[mode](port)
