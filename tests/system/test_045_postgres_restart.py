"""PostgreSQL restarts under a running auth service (DESIGN §6): while the database is
down, calls that need it are answered 503 (problem+json, quickly, never a hang) and the
service reports not ready; once it is back the service reconnects by itself and nothing
stored was lost."""

import subprocess
import time

import requests

from cairn import STACK, assert_problem, wait_until


def test_postgres_restart(new_cluster, stack):
    c = new_cluster()
    api = c.api()
    u = api.new_user("pgrestart")

    subprocess.run([STACK, "stop", stack.root], check=True, capture_output=True, timeout=120)
    try:
        t = time.monotonic()
        r = api.login(u.email)
        assert_problem(r, 503)
        assert time.monotonic() - t < 5, "a login with the database down must fail fast"
        # /me needs the database too (the user row)
        assert_problem(api.me(u.access), 503)
        wait_until(lambda: requests.get(c.auth.admin_url + "/readyz", timeout=2).status_code == 503,
                   timeout=5, what="auth reports not ready while PostgreSQL is down")
    finally:
        r = subprocess.run([STACK, "start", stack.root], capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr

    wait_until(lambda: api.me(u.access).status_code == 200, timeout=20,
               what="/v1/auth/me answers again after PostgreSQL is back")
    assert api.login(u.email).status_code == 200
    assert api.refresh(u.refresh).status_code == 200
    wait_until(lambda: requests.get(c.auth.admin_url + "/readyz", timeout=2).status_code == 200,
               timeout=10, what="auth ready again")
