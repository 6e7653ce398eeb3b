"""Faults: the auth service dies under the gateway (fast 503 problem, never a hang, and
recovery once it is back), and a service that is slow (stopped with SIGSTOP) gets 504
at the route timeout."""

import signal
import time

from cairn import assert_problem, unique_email, wait_until

ROUTE_TIMEOUT_S = 2.0  # CAIRN_UPSTREAM_TIMEOUT_MS in the harness


def timed(fn):
    t = time.monotonic()
    r = fn()
    return r, time.monotonic() - t


def test_auth_killed_gives_fast_503_then_recovers(new_cluster):
    c = new_cluster()
    api = c.api()
    u = api.new_user("fault")

    c.auth.kill()
    # The gateway keeps serving what it can answer alone.
    assert api.get("/healthz").status_code == 200
    for call in (lambda: api.me(u.access),
                 lambda: api.login(u.email),
                 lambda: api.register(unique_email("fault")),
                 lambda: api.refresh(u.refresh)):
        r, took = timed(call)
        assert_problem(r, 503)
        assert took < ROUTE_TIMEOUT_S + 0.5, f"took {took:.2f}s"
    # Tokens are still verified at the edge: a bad one is 401, not 503.
    assert api.me(authorization="Bearer nonsense").status_code == 401

    c.auth.restart()
    wait_until(lambda: api.me(u.access).status_code == 200, timeout=10,
               what="/v1/auth/me answers 200 after auth restarted")
    assert api.login(u.email).status_code == 200
    assert api.refresh(u.refresh).status_code == 200
    assert api.register(unique_email("after")).status_code == 201


def test_auth_hung_gives_504_at_the_route_timeout(new_cluster):
    c = new_cluster()
    api = c.api()
    u = api.new_user("hung")
    c.auth.signal(signal.SIGSTOP)
    try:
        r, took = timed(lambda: api.me(u.access))
        assert_problem(r, 504)
        assert ROUTE_TIMEOUT_S - 0.2 <= took < ROUTE_TIMEOUT_S + 1.5, f"took {took:.2f}s"
    finally:
        c.auth.signal(signal.SIGCONT)
    wait_until(lambda: api.me(u.access).status_code == 200, timeout=10,
               what="/v1/auth/me answers 200 after auth resumed")
