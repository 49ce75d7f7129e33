"""argv[1] == "inside": a server and a client both inside the sandbox, on 127.0.0.1 and ::1.
argv[1] == "host" PORT: read what a listener on the host's 127.0.0.1:PORT says first.
Prints one JSON object."""
import errno
import json
import socket
import sys
import threading


def ping_pong(family, host):
    srv = socket.socket(family)
    srv.bind((host, 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        c, _ = srv.accept()
        c.sendall(b"pong:" + c.recv(100))
        c.close()

    t = threading.Thread(target=serve)
    t.start()
    cli = socket.create_connection((host, port), timeout=5)
    peer = cli.getpeername()[1]
    cli.sendall(b"ping")
    got = cli.recv(100).decode()
    t.join()
    return {"reply": got, "peer_port_matches": peer == port}


if sys.argv[1] == "inside":
    print(json.dumps({"v4": ping_pong(socket.AF_INET, "127.0.0.1"), "v6": ping_pong(socket.AF_INET6, "::1")}))
else:
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=5)
        print(json.dumps({"said": s.recv(200).decode()}))
    except OSError as e:
        print(json.dumps({"error": errno.errorcode.get(e.errno, str(e.errno))}))
