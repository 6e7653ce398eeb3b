"""Shutdown: SIGTERM makes the gateway and auth exit 0 within a few seconds, and nothing
is left listening on their ports."""

import signal
import socket
import time


def port_open(port):
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_sigterm_gateway_exits_0(new_cluster):
    c = new_cluster()
    api = c.api()
    assert api.get("/healthz").status_code == 200
    t = time.monotonic()
    c.gateway.signal(signal.SIGTERM)
    rc = c.gateway.wait(timeout=10)
    took = time.monotonic() - t
    assert rc == 0, f"exit status {rc}\n{c.gateway.log_tail()}"
    assert took < 5, f"took {took:.1f}s"
    assert not port_open(c.gateway.http_port)
    assert not port_open(c.gateway.admin_port)


def test_sigterm_auth_exits_0(new_cluster):
    c = new_cluster()
    c.gateway.stop()
    t = time.monotonic()
    c.auth.signal(signal.SIGTERM)
    rc = c.auth.wait(timeout=15)
    took = time.monotonic() - t
    assert rc == 0, f"exit status {rc}\n{c.auth.log_tail()}"
    assert took < 5, f"took {took:.1f}s"
    assert not port_open(c.auth.admin_port)
