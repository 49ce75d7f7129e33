"""DNS probes from inside a session. Prints one JSON value.

gai PORT NAME...          getaddrinfo twice per family: {name: {v4: [[...], [...]], v6: [...]}}
query JSON                raw DNS queries, JSON = [[transport, server, name, type], ...] where
                          transport is udp (sendto, unconnected), udpc (connected UDP socket) or
                          tcp (RFC 7766 framing); answers [{rcode, answers: [{type, ttl, data}]}]
connect HOST PORT         a TCP connect: "ok" or the errno's name
"""
import errno
import json
import random
import socket
import struct
import sys

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "MX": 15, "TXT": 16, "AAAA": 28}
NAMES = {v: k for k, v in TYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def gai(port, names):
    out = {}
    for name in names:
        entry = {}
        for key, family in (("v4", socket.AF_INET), ("v6", socket.AF_INET6)):
            calls = []
            for _ in range(2):
                try:
                    infos = socket.getaddrinfo(name, port, family, socket.SOCK_STREAM)
                    calls.append(sorted({i[4][0] for i in infos}))
                except socket.gaierror as e:
                    calls.append("gaierror %d" % e.errno)
            entry[key] = calls
        out[name] = entry
    return out


def build(name, qtype):
    qid = random.randint(0, 0xFFFF)
    head = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".") if l)
    return qid, head + labels + b"\x00" + struct.pack(">HH", TYPES[qtype], 1)


def skip_name(msg, at):
    while True:
        n = msg[at]
        if n & 0xC0 == 0xC0:
            return at + 2
        if n == 0:
            return at + 1
        at += n + 1


def parse(msg, qid):
    rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", msg[:12])
    if rid != qid:
        return {"error": "id mismatch"}
    at = 12
    for _ in range(qd):
        at = skip_name(msg, at) + 4
    answers = []
    for _ in range(an):
        at = skip_name(msg, at)
        rtype, _, ttl, rdlen = struct.unpack(">HHIH", msg[at : at + 10])
        at += 10
        rdata = msg[at : at + rdlen]
        at += rdlen
        if rtype == 1:
            data = socket.inet_ntop(socket.AF_INET, rdata)
        elif rtype == 28:
            data = socket.inet_ntop(socket.AF_INET6, rdata)
        elif rtype == 16:
            strings, i = [], 0
            while i < len(rdata):
                strings.append(rdata[i + 1 : i + 1 + rdata[i]].decode())
                i += 1 + rdata[i]
            data = " ".join(strings)
        else:
            data = rdata.hex()
        answers.append({"type": NAMES.get(rtype, str(rtype)), "ttl": ttl, "data": data})
    return {"rcode": RCODES.get(flags & 0xF, str(flags & 0xF)), "answers": answers}


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError(errno.ECONNRESET, "short read")
        buf += chunk
    return buf


def query(transport, server, name, qtype):
    qid, q = build(name, qtype)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    try:
        if transport == "tcp":
            s = socket.create_connection((server, 53), timeout=5)
            s.sendall(struct.pack(">H", len(q)) + q)
            (n,) = struct.unpack(">H", recv_exact(s, 2))
            msg = recv_exact(s, n)
        else:
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.settimeout(5)
            if transport == "udpc":
                s.connect((server, 53))
                s.send(q)
                msg = s.recv(4096)
            else:
                s.sendto(q, (server, 53))
                msg, _ = s.recvfrom(4096)
        s.close()
    except OSError as e:
        return {"error": errno.errorcode.get(e.errno, str(e))}
    return parse(msg, qid)


def connect(host, port):
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        s.close()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))


if sys.argv[1] == "gai":
    print(json.dumps(gai(int(sys.argv[2]), sys.argv[3:])))
elif sys.argv[1] == "query":
    print(json.dumps([query(*p) for p in json.loads(sys.argv[2])]))
elif sys.argv[1] == "connect":
    print(json.dumps(connect(sys.argv[2], sys.argv[3])))
