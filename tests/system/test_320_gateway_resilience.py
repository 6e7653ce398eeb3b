"""Issue 5: the gateway's upstream resilience — deadlines, retries, load balancing and
discovery — against real auth replicas and fake services (fakesvc.py) that fail, stall
or drop their connections on cue.

  - an auth replica SIGKILLed under a steady load of idempotent GETs: no client sees an
    error (the calls it held are retried on the other replica);
  - a POST that may have run is never retried; one that provably did not reach a handler
    is (the fake's unprocessed UNAVAILABLE), and so is one with an Idempotency-Key;
  - X-Request-Timeout-Ms shortens the route's timeout (an API key's lookup in auth
    included), a malformed one is a 400 naming the header, and a 504 says which budget
    ran out, in about that time;
  - discovery: an address listed before its replica runs gets traffic once it comes up,
    and a replica stopped gracefully stops getting traffic without a client error.
"""

import threading
import time

import pytest
import requests

import cairn
from cairn import assert_problem, assert_v2_error, metric_sum, wait_until
from fakesvc import UNAVAILABLE, FakeService


def me_calls(auth):
    return metric_sum(auth.metrics(), "cairn_rpc_calls_total", method="Me")


class Load:
    """Threads sending GET /v1/auth/me until stopped; records every status."""

    def __init__(self, base, token, threads=4):
        self.base, self.token, self.threads = base, token, threads
        self.statuses, self.errors = [], []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = []

    def _run(self):
        s = requests.Session()
        while not self._stop.is_set():
            try:
                r = s.get(self.base + "/v1/auth/me", headers=cairn.bearer(self.token), timeout=5)
                with self._lock:
                    self.statuses.append(r.status_code)
                    if r.status_code != 200:
                        self.errors.append((r.status_code, r.text[:200]))
            except requests.RequestException as e:
                with self._lock:
                    self.errors.append(("exception", repr(e)))

    def __enter__(self):
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._workers:
            t.join(10)


def test_replica_killed_under_load_no_client_error(new_cluster):
    c = new_cluster(replicas=2)
    api = c.api()
    u = api.new_user("resilience")
    wait_until(lambda: c.gateway.metrics() and
               metric_sum(c.gateway.metrics(), "cairn_gateway_instances", service="auth",
                          state="connected") == 2, timeout=5, what="both auth replicas connected")
    with Load(c.url, u.access, threads=6) as load:
        time.sleep(0.7)
        before = len(load.statuses)
        c.auths[0].kill()
        time.sleep(1.0)
    assert before > 20, f"too little load before the kill: {before}"
    assert len(load.statuses) > before + 20, "the load stopped after the kill"
    assert not load.errors, f"{len(load.errors)} client-visible errors, e.g. {load.errors[:3]}"
    m = c.gateway.metrics()
    assert metric_sum(m, "cairn_gateway_instances", service="auth", state="connected") == 1
    # Every request counted towards the attempt histogram of the instance that served it.
    assert metric_sum(m, "cairn_gateway_upstream_attempt_seconds_count", service="auth") >= len(load.statuses)


@pytest.fixture
def fake_inference(new_cluster):
    """A cluster whose gateway sends inference routes to two fake instances."""
    fakes = [FakeService().start(), FakeService().start()]
    c = new_cluster(gateway_env={"CAIRN_INFERENCE_ADDR": ",".join(f.addr for f in fakes),
                                 "CAIRN_READY_SERVICES": "auth,inference"})
    wait_until(lambda: metric_sum(c.gateway.metrics(), "cairn_gateway_instances", service="inference",
                                  state="connected") == 2, timeout=5, what="both fakes connected")
    yield c, fakes
    for f in fakes:
        f.stop()


def create_model(api, user, name, headers=None):
    return api.post("/v1/models", {"name": name}, headers={**cairn.bearer(user.access), **(headers or {})})


def test_post_that_may_have_run_is_not_retried(fake_inference):
    c, (a, b) = fake_inference
    api = c.api()
    u = api.new_user("nonidem")
    a.behave(hold=True)
    b.behave(hold=True)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=create_model(api, u, "held-model")))
    t.start()
    wait_until(lambda: a.count("CreateModel") + b.count("CreateModel") == 1, timeout=5, what="the POST arrived")
    held, other = (a, b) if a.count("CreateModel") else (b, a)
    other.behave()
    held.stop()   # the connection drops with the call in it: it may have run
    t.join(10)
    r = result["r"]
    assert_problem(r, 503)
    assert "lost the connection" in r.json()["detail"], r.text
    time.sleep(0.2)
    assert other.count("CreateModel") == 0, "a POST that may have run was retried"
    m = c.gateway.metrics()
    assert metric_sum(m, "cairn_gateway_retries_total", service="inference") == 0


def test_post_with_idempotency_key_is_retried(fake_inference):
    c, (a, b) = fake_inference
    api = c.api()
    u = api.new_user("idemkey")
    a.behave(hold=True)
    b.behave(hold=True)
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=create_model(api, u, "keyed-model", headers={"Idempotency-Key": "k-1"})))
    t.start()
    wait_until(lambda: a.count("CreateModel") + b.count("CreateModel") == 1, timeout=5, what="the POST arrived")
    held, other = (a, b) if a.count("CreateModel") else (b, a)
    other.behave()
    held.stop()
    t.join(10)
    assert result["r"].status_code == 201, result["r"].text
    assert other.count("CreateModel") == 1
    m = c.gateway.metrics()
    assert metric_sum(m, "cairn_gateway_retries_total", service="inference", reason="connection_lost") == 1


def test_post_not_processed_is_retried_elsewhere(fake_inference):
    """UNAVAILABLE with unprocessed set (a draining service's intake) means no handler ran:
    even a POST goes to the other instance. A plain UNAVAILABLE on a POST is the answer."""
    c, (a, b) = fake_inference
    api = c.api()
    u = api.new_user("unprocessed")
    for f in (a, b):
        f.behave(code=UNAVAILABLE, unprocessed=True)
    # Both refuse unprocessed: tried on both (max_attempts 3 allows it), then 503.
    r = create_model(api, u, "m1")
    assert_problem(r, 503)
    assert a.count("CreateModel") >= 1 and b.count("CreateModel") >= 1
    # One refuses unprocessed, the other serves: the client sees only the success.
    a.behave(code=UNAVAILABLE, unprocessed=True)
    b.behave()
    for i in range(6):
        r = create_model(api, u, f"m2-{i}")
        assert r.status_code == 201, r.text
    # A processed UNAVAILABLE on a POST is not retried.
    a.behave(code=UNAVAILABLE)
    b.behave(code=UNAVAILABLE)
    before = a.count() + b.count()
    r = create_model(api, u, "m3")
    assert_problem(r, 503)
    assert a.count() + b.count() == before + 1


def test_deadline_client_header(cluster):
    api = cluster.api()
    u = api.new_user("deadline")
    # Malformed: a 400 naming the header.
    for bad in ("abc", "0", "-5", "1.5", "", "99999999999999"):
        r = api.get("/v1/auth/me", headers={**cairn.bearer(u.access), "X-Request-Timeout-Ms": bad})
        assert_problem(r, 400, field="X-Request-Timeout-Ms")
    # A budget too small to start an attempt: 504 at once, naming the client's budget.
    t0 = time.monotonic()
    r = api.post("/v1/auth/login", {"email": u.email, "password": cairn.PASSWORD},
                 headers={"X-Request-Timeout-Ms": "1"})
    took = time.monotonic() - t0
    body = assert_problem(r, 504)
    assert "X-Request-Timeout-Ms of 1 ms" in body["detail"], body
    assert took < 0.5, took
    # Larger than the route's: the route's applies, and the request is served.
    r = api.get("/v1/auth/me", headers={**cairn.bearer(u.access), "X-Request-Timeout-Ms": "600000"})
    assert r.status_code == 200, r.text


def test_deadline_bounds_the_api_key_lookup(new_cluster):
    """An API key the gateway has not resolved yet is looked up within the request's
    deadline, not the default upstream timeout: a slow auth gives a 504 in about the
    client's budget, naming it."""
    c = new_cluster()
    c.auth.set_faults(delay_ms=3000, delay_percent=100, methods=["ResolveApiKey"])
    try:
        t0 = time.monotonic()
        r = requests.get(c.url + "/v1/auth/me", timeout=10,
                         headers={"X-API-Key": cairn.api_key(), "X-Request-Timeout-Ms": "300"})
        took = time.monotonic() - t0
        body = assert_problem(r, 504)
        # Whichever notices first answers: the gateway's timer (naming the client's
        # budget) or auth, which got the time left and ends its delay there.
        assert ("X-Request-Timeout-Ms of 300 ms" in body["detail"]
                or body["detail"] == "deadline exceeded during an injected delay"), body
        assert took < 1.5, took
    finally:
        c.auth.set_faults()


def test_deadline_slow_service(fake_inference):
    c, fakes = fake_inference
    api = c.api()
    for f in fakes:
        f.behave(delay_s=1.5)
    # The client's budget: 504 in about 200 ms, and the service got the time left.
    t0 = time.monotonic()
    r = api.get("/v2/health/live", headers={"X-Request-Timeout-Ms": "200"})
    took = time.monotonic() - t0
    assert_v2_error(r, 504)
    assert "X-Request-Timeout-Ms of 200 ms" in r.json()["error"], r.text
    assert 0.19 <= took < 0.45, took
    timeouts = [t for f in fakes for m, t in f.calls if m == "ServerLive"]
    assert timeouts and all(0 < t <= 200 for t in timeouts), timeouts
    # A timeout is not retried: one call only.
    assert len(timeouts) == 1, timeouts
    # The route's budget (CAIRN_UPSTREAM_TIMEOUT_MS=2000 in the harness) names itself.
    for f in fakes:
        f.behave(delay_s=3)
    t0 = time.monotonic()
    r = api.get("/v2/health/live")
    took = time.monotonic() - t0
    assert_v2_error(r, 504)
    assert "the route's 2000 ms" in r.json()["error"], r.text
    assert 1.95 <= took < 2.4, took


def test_discovery_late_replica_and_graceful_stop(stack, key_file, log_dir):
    c = cairn.Cluster(stack, key_file, log_dir, replicas=2)
    late = c.auths[1]
    try:
        c.auths[0].start().wait_ready()
        c.gateway.start().wait_ready()
        api = c.api()
        u = api.new_user("discovery")
        for _ in range(10):
            assert api.me(u.access).status_code == 200
        late.start().wait_ready()
        # Listed from the start but down: picked up when it comes up, without a restart.
        wait_until(lambda: api.me(u.access).status_code == 200 and me_calls(late) > 0,
                   timeout=5, what="the late replica gets traffic")
        # Stopped gracefully under load: no client error, and no more traffic to it.
        with Load(c.url, u.access, threads=4) as load:
            time.sleep(0.3)
            late.stop()
            time.sleep(0.7)
        assert not load.errors, load.errors[:3]
        n = me_calls(c.auths[0])
        for _ in range(10):
            assert api.me(u.access).status_code == 200
        assert me_calls(c.auths[0]) == n + 10
    finally:
        c.stop()
