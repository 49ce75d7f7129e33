"""Bad input towards the gateway. Prints one JSON object. argv: MODE [PORT]
- malformed PORT: a TLS record header with a non-ClientHello body, then read.
- silent PORT: send nothing, read the server's banner, then echo one line.
- refused PORT: an HTTP request to an upstream that refuses; report the read error.
- direct: find the gateway's own listener in /proc/net/tcp and dial it directly."""
import errno
import json
import socket
import sys


def read(s):
    try:
        return {"read": s.recv(4096).decode("latin-1")}
    except OSError as e:
        return {"error": errno.errorcode.get(e.errno, str(e.errno))}


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def gateway_listener():
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            ip, port = local.split(":")
            # Port 53 is the session resolver's TCP listener, not the gateway's.
            if state == "0A" and ip == "0100007F" and int(port, 16) != 53:
                return int(port, 16)
    return None


mode = sys.argv[1]
if mode == "malformed":
    s = connect(int(sys.argv[2]))
    s.sendall(b"\x16\x03\x01\x00\x04\xff\xff\xff\xff")
    out = read(s)
elif mode == "silent":
    s = connect(int(sys.argv[2]))
    out = read(s)
    s.sendall(b"echo me\n")
    out["echo"] = read(s).get("read")
elif mode == "refused":
    try:
        s = connect(int(sys.argv[2]))
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        out = read(s)
    except OSError as e:  # the gateway dials while connecting: the reset may beat connect()
        out = {"error": errno.errorcode.get(e.errno, str(e.errno))}
else:
    port = gateway_listener()
    out = {"found": port is not None}
    if port is not None:
        try:
            out.update(read(connect(port)))
        except OSError as e:  # the reset may beat the end of the handshake
            out["error"] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out, sort_keys=True))
