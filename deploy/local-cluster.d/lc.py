#!/usr/bin/env python3
"""Helpers for deploy/local-cluster (standard library only, Python 3.8+).

Subcommands:
  spawn --pidfile P --log L [--cwd D] -- ARGV...
      Start ARGV detached (new session, stdin from /dev/null, stdout+stderr appended to L),
      write its PID to P and print it.
  probe-kafka HOST PORT
      One Metadata request (v4) over the Kafka wire protocol; prints the brokers, the
      controller and the cluster id. Exit 0 when the broker answered with itself in the list.
  probe-cql HOST PORT
      CQL native protocol v4: STARTUP, then SELECT release_version FROM system.local at ONE;
      prints the release version. Exit 0 on a row.
  probe-redis HOST PORT
      PING; exit 0 on +PONG.
  rss PID
      Resident memory of PID (and its children) in MiB, from /proc.

Every probe makes one attempt with a short timeout and prints the reason when it fails;
the bash script does the waiting and retrying.
"""

# ruff: noqa: T201  (a command-line helper: printing is its output)

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys

TIMEOUT = 5.0


class ProbeError(Exception):
    pass


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by the server")
        buf += chunk
    return bytes(buf)


# ---------------------------------------------------------------- spawn


def cmd_spawn(args: list[str]) -> int:
    pidfile = log = None
    cwd = None
    while args and args[0] != "--":
        opt = args.pop(0)
        if opt == "--pidfile":
            pidfile = args.pop(0)
        elif opt == "--log":
            log = args.pop(0)
        elif opt == "--cwd":
            cwd = args.pop(0)
        else:
            print(f"spawn: unknown option {opt}", file=sys.stderr)
            return 2
    if not args or pidfile is None or log is None:
        print("usage: spawn --pidfile P --log L [--cwd D] -- ARGV...", file=sys.stderr)
        return 2
    argv = args[1:]
    with open(log, "ab") as out, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            argv,
            stdin=devnull,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    tmp = pidfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{proc.pid}\n")
    os.replace(tmp, pidfile)
    print(proc.pid)
    return 0


# ---------------------------------------------------------------- Kafka


def _kstr(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProbeError("short response")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def i8(self) -> int:
        return struct.unpack(">b", self.take(1))[0]

    def i16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def i32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def kstring(self) -> str | None:
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def cql_string(self) -> str:
        n = struct.unpack(">H", self.take(2))[0]
        return self.take(n).decode()

    def cql_bytes(self) -> bytes | None:
        n = self.i32()
        return None if n < 0 else self.take(n)


def probe_kafka(host: str, port: int) -> str:
    api_key, api_version, correlation_id = 3, 4, 7  # Metadata v4 (non-flexible)
    # Request header v1: api_key, api_version, correlation_id, client_id.
    header = struct.pack(">hhi", api_key, api_version, correlation_id) + _kstr("local-cluster")
    # Metadata v4 body: topics (empty array = no topics), allow_auto_topic_creation.
    body = struct.pack(">i", 0) + struct.pack(">b", 0)
    payload = header + body
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        r = _Reader(_recv_exact(sock, size))
    if r.i32() != correlation_id:
        raise ProbeError("correlation id mismatch")
    r.i32()  # throttle_time_ms
    brokers = []
    for _ in range(r.i32()):
        node_id = r.i32()
        bhost = r.kstring()
        bport = r.i32()
        r.kstring()  # rack
        brokers.append(f"{node_id}@{bhost}:{bport}")
    cluster_id = r.kstring()
    controller_id = r.i32()
    if not brokers:
        raise ProbeError("metadata response lists no broker yet")
    return f"brokers={','.join(brokers)} controller={controller_id} cluster_id={cluster_id}"


# ---------------------------------------------------------------- CQL


CQL_VERSION = 0x04
OP_ERROR, OP_STARTUP, OP_READY = 0x00, 0x01, 0x02
OP_AUTHENTICATE, OP_QUERY, OP_RESULT = 0x03, 0x07, 0x08


def _cql_frame(stream: int, opcode: int, body: bytes) -> bytes:
    return struct.pack(">BBhBi", CQL_VERSION, 0, stream, opcode, len(body)) + body


def _cql_read(sock: socket.socket) -> tuple[int, bytes]:
    version, _flags, _stream, opcode, length = struct.unpack(">BBhBi", _recv_exact(sock, 9))
    body = _recv_exact(sock, length)
    if opcode == OP_ERROR:
        r = _Reader(body)
        code = r.i32()
        raise ProbeError(f"server error 0x{code:04x}: {r.cql_string()}")
    if version & 0x7F != CQL_VERSION:
        raise ProbeError(f"unexpected protocol version {version:#x}")
    return opcode, body


def probe_cql(host: str, port: int) -> str:
    def cstr(s: str) -> bytes:
        b = s.encode()
        return struct.pack(">H", len(b)) + b

    startup = struct.pack(">H", 1) + cstr("CQL_VERSION") + cstr("3.0.0")
    query = "SELECT release_version FROM system.local"
    qb = query.encode()
    # QUERY body: [long string] query, [short] consistency ONE, [byte] flags 0.
    qbody = struct.pack(">i", len(qb)) + qb + struct.pack(">HB", 0x0001, 0)
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendall(_cql_frame(1, OP_STARTUP, startup))
        opcode, _ = _cql_read(sock)
        if opcode == OP_AUTHENTICATE:
            raise ProbeError("server asks for authentication (expected AllowAllAuthenticator)")
        if opcode != OP_READY:
            raise ProbeError(f"unexpected reply to STARTUP: opcode {opcode:#x}")
        sock.sendall(_cql_frame(2, OP_QUERY, qbody))
        opcode, body = _cql_read(sock)
    if opcode != OP_RESULT:
        raise ProbeError(f"unexpected reply to QUERY: opcode {opcode:#x}")
    r = _Reader(body)
    if r.i32() != 0x0002:
        raise ProbeError("QUERY result is not ROWS")
    flags = r.i32()
    ncols = r.i32()
    if flags & 0x0002:
        r.cql_bytes()  # paging state
    if not flags & 0x0004:  # metadata present
        global_spec = flags & 0x0001
        if global_spec:
            r.cql_string()
            r.cql_string()
        for _ in range(ncols):
            if not global_spec:
                r.cql_string()
                r.cql_string()
            r.cql_string()  # column name
            if r.i16() == 0x0000:  # custom type carries a class name
                r.cql_string()
    nrows = r.i32()
    if nrows < 1:
        raise ProbeError("system.local returned no row")
    value = r.cql_bytes()
    return "release_version=" + (value.decode() if value is not None else "null")


# ---------------------------------------------------------------- Redis


def probe_redis(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendall(b"PING\r\n")
        line = b""
        while not line.endswith(b"\r\n"):
            chunk = sock.recv(256)
            if not chunk:
                raise ProbeError("connection closed by the server")
            line += chunk
    reply = line.strip().decode(errors="replace")
    if reply != "+PONG":
        raise ProbeError(f"PING answered {reply!r}")
    return "PONG"


# ---------------------------------------------------------------- memory


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def rss_mib(pid: int) -> float:
    total_kb = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
        except OSError:
            continue
        todo += _children(p)
    return total_kb / 1024


# ---------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "spawn":
        return cmd_spawn(args)
    if cmd == "rss":
        print(f"{rss_mib(int(args[0])):.0f}")
        return 0
    probes = {"probe-kafka": probe_kafka, "probe-cql": probe_cql, "probe-redis": probe_redis}
    if cmd in probes and len(args) == 2:
        try:
            print(probes[cmd](args[0], int(args[1])))
            return 0
        except (OSError, ProbeError, struct.error, UnicodeDecodeError) as e:
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
