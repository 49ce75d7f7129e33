"""Escape attempts from inside the sandbox. Prints one JSON object: attempt -> "ok" or errno name.
argv: CONTROL_SOCKET HOST_SOCKET"""
import ctypes
import errno
import json
import os
import socket
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
SYS_IO_URING_SETUP = 425  # x86_64
SYS_SETNS = 308
results = {}


def errname(code):
    return errno.errorcode.get(code, str(code))


def raw_call(name, ret):
    results[name] = "ok" if ret >= 0 else errname(ctypes.get_errno())


def attempt(name, fn):
    try:
        fn()
        results[name] = "ok"
    except OSError as e:
        results[name] = errname(e.errno)


params = ctypes.create_string_buffer(120)
raw_call("io_uring_setup", libc.syscall(SYS_IO_URING_SETUP, ctypes.c_uint(8), params))
ns = os.open("/proc/self/ns/net", os.O_RDONLY)
raw_call("setns", libc.syscall(SYS_SETNS, ctypes.c_int(ns), ctypes.c_int(CLONE_NEWNET)))
raw_call("unshare_net", libc.unshare(ctypes.c_int(CLONE_NEWNET)))
raw_call("unshare_user", libc.unshare(ctypes.c_int(CLONE_NEWUSER)))
attempt("raw_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt("packet_socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)))
attempt("udp_sendto", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("203.0.113.5", 9999)))
attempt("v4_mapped", lambda: socket.socket(socket.AF_INET6).connect(("::ffff:203.0.113.5", 443)))
attempt("control_socket", lambda: socket.socket(socket.AF_UNIX).connect(sys.argv[1]))
attempt("host_unix_socket", lambda: socket.socket(socket.AF_UNIX).connect(sys.argv[2]))
print(json.dumps(results, sort_keys=True))
