"""A fake Cairn service for the gateway's resilience tests: an nng REP peer over TCP,
written against the wire format (no pynng on these machines), that answers every Call as
told and counts what it received.

The nng TCP transport: each side sends an 8-byte hello (0, 'S', 'P', 0, protocol as 16
bits big-endian, 0, 0; REQ v0 = 0x30, REP v0 = 0x31), then messages of a 64-bit
big-endian length and the bytes. A REQ message starts with its 4-byte request id (top bit
set), which the reply repeats before its body. The body is a cairn.v1.Call; the reply a
cairn.v1.Result (proto/cairn/v1/rpc.proto), both encoded here by hand: a few varint and
length-delimited fields.

    svc = FakeService().start()          # svc.addr = "tcp://127.0.0.1:PORT"
    svc.behave(code=14)                  # UNAVAILABLE to everything from now on
    svc.behave(delay_s=0.5)              # OK after half a second
    svc.behave(hold=True)                # never answer (until stop() drops the connections)
    svc.calls                            # [(method, timeout_ms), ...] in arrival order
    svc.stop()                           # closes the listener and every connection
"""

import socket
import struct
import threading
import time

OK, RESOURCE_EXHAUSTED, UNAVAILABLE = 0, 8, 14

HELLO_REQ = b"\x00SP\x00\x00\x30\x00\x00"
HELLO_REP = b"\x00SP\x00\x00\x31\x00\x00"


def _varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def parse_call(buf):
    """(method, timeout_ms) of a packed cairn.v1.Call."""
    i, method, timeout = 0, "", 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
            if field == 3:
                timeout = v
        elif wire == 2:
            n, i = _read_varint(buf, i)
            if field == 1:
                method = buf[i:i + n].decode()
            i += n
        elif wire == 5:
            i += 4
        elif wire == 1:
            i += 8
        else:
            raise ValueError(f"wire type {wire}")
    return method, timeout


def result(code=OK, message="", retry_after_ms=0, load=0, unprocessed=False):
    """A packed cairn.v1.Result (an empty body: the RPC's default response)."""
    out = b""
    if code:
        out += b"\x08" + _varint(code)
    if message:
        m = message.encode()
        out += b"\x12" + _varint(len(m)) + m
    if retry_after_ms:
        out += b"\x20" + _varint(retry_after_ms)
    if load:
        out += b"\x30" + _varint(load)
    if unprocessed:
        out += b"\x38\x01"
    return out


class FakeService:
    def __init__(self, port=None):
        from cairn import free_port
        self.port = port or free_port()
        self.calls = []
        self._mode = {"code": OK, "delay_s": 0.0, "hold": False, "unprocessed": False, "load": 0,
                      "retry_after_ms": 100}
        self._lock = threading.Lock()
        self._conns = []
        self._listener = None
        self._stopped = threading.Event()

    @property
    def addr(self):
        return f"tcp://127.0.0.1:{self.port}"

    def behave(self, code=OK, delay_s=0.0, hold=False, unprocessed=False, load=0, retry_after_ms=100):
        """How to answer from now on: code (with retry_after_ms when not OK), after
        delay_s, or never (hold); unprocessed and load go into the Result as given."""
        with self._lock:
            self._mode = {"code": code, "delay_s": delay_s, "hold": hold, "unprocessed": unprocessed,
                          "load": load, "retry_after_ms": retry_after_ms}

    def count(self, method=None):
        with self._lock:
            return sum(1 for m, _ in self.calls if method is None or m == method)

    def start(self):
        self._stopped.clear()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()
        return self

    def stop(self):
        """Closes the listener and drops every connection (like a killed process)."""
        self._stopped.set()
        if self._listener:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, s):
        while not self._stopped.is_set():
            try:
                c, _ = s.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _recv_exact(c, n):
        buf = b""
        while len(buf) < n:
            chunk = c.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def _serve(self, c):
        send_lock = threading.Lock()
        try:
            c.sendall(HELLO_REP)
            if self._recv_exact(c, 8) != HELLO_REQ:
                return
            while True:
                (n,) = struct.unpack(">Q", self._recv_exact(c, 8))
                msg = self._recv_exact(c, n)
                header, body = msg[:4], msg[4:]
                method, timeout = parse_call(body)
                with self._lock:
                    self.calls.append((method, timeout))
                    mode = dict(self._mode)
                if mode["hold"]:
                    continue
                reply = header + result(mode["code"], "fake says no" if mode["code"] else "",
                                        mode["retry_after_ms"] if mode["code"] else 0, mode["load"],
                                        mode["unprocessed"])
                if mode["delay_s"]:
                    threading.Thread(target=self._reply_later, daemon=True,
                                     args=(c, send_lock, reply, mode["delay_s"])).start()
                else:
                    with send_lock:
                        c.sendall(struct.pack(">Q", len(reply)) + reply)
        except (OSError, ConnectionError, ValueError):
            pass

    def _reply_later(self, c, send_lock, reply, delay_s):
        time.sleep(delay_s)
        try:
            with send_lock:
                c.sendall(struct.pack(">Q", len(reply)) + reply)
        except OSError:
            pass
