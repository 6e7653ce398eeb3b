"""Fault injection and tracing at the gateway (issue 5): faults are off unless the policy
file enables them; rules abort or delay a route group; X-Fault-* headers when the file
allows them; an injected delay beyond the route timeout is a 504 in time; a service made
to fail through its admin port fails alone; W3C traceparent is kept or generated, reaches
the service and is logged; every response carries Server-Timing."""

import os
import re
import time

import pytest
import requests

import cairn
from cairn import assert_problem, metric_sum

TIMEOUT_MS = 1000     # the fault cluster's route timeout (CAIRN_UPSTREAM_TIMEOUT_MS)
MARGIN_S = 0.3        # how late a 504 may come beyond it

CLIENT_TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

POLICY = """\
route_groups:
  keys: ["GET /.well-known/jwks.json"]
  broken: ["POST /v1/auth/logout"]
faults:
  enabled: true
  headers: true
  rules:
    - groups: [broken]
      abort_status: 503
      abort_percent: 100
    - groups: [keys]
      delay_ms: 150
      delay_percent: 100
"""


@pytest.fixture(scope="module")
def fc(stack, key_file, log_dir, work_dir):
    """Two auth replicas (debug logs: each call's trace id) behind a gateway whose policy
    file enables faults and fault headers, with a 1 s route timeout."""
    path = os.path.join(work_dir, "policy-340.yaml")
    with open(path, "w") as f:
        f.write(POLICY)
    c = cairn.Cluster(stack, key_file, log_dir, replicas=2,
                      auth_env={"CAIRN_LOG_LEVEL": "debug"},
                      gateway_env={"CAIRN_GATEWAY_CONFIG": path,
                                   "CAIRN_UPSTREAM_TIMEOUT_MS": str(TIMEOUT_MS)}).start()
    yield c
    c.stop()


def timed(fn, *a, **kw):
    t0 = time.monotonic()
    r = fn(*a, **kw)
    return r, time.monotonic() - t0


def server_timing(r):
    """Server-Timing as {name: ms}; asserts it is there and well formed."""
    v = r.headers.get("Server-Timing")
    assert v, f"no Server-Timing on {r.status_code}: {dict(r.headers)}"
    out = {}
    for part in v.split(","):
        m = re.fullmatch(r"\s*([a-z]+);dur=(\d+(?:\.\d+)?)\s*", part)
        assert m, f"bad Server-Timing {v!r}"
        out[m.group(1)] = float(m.group(2))
    assert "gw" in out and "upstream" in out, v
    return out


def faults_total(gw, **labels):
    return metric_sum(gw.metrics(), "cairn_gateway_faults_total", **labels)


# ---- faults off by default (the shared cluster has no policy file) ----

def test_fault_headers_ignored_by_default(cluster, api):
    h = {"X-Fault-Abort": "503", "X-Fault-Delay-Ms": "1500"}
    r, took = timed(api.get, "/.well-known/jwks.json", headers=h)
    assert r.status_code == 200, r.text
    assert took < 1.0, took
    # even a malformed one: nothing reads it
    r = api.get("/.well-known/jwks.json", headers={"X-Fault-Abort": "soon"})
    assert r.status_code == 200, r.text
    assert faults_total(cluster.gateway) == 0
    rec = cluster.gateway.access_log(r.headers["X-Request-Id"])
    assert rec and rec["fault"] == "-", rec


# ---- Server-Timing and trace context (shared cluster) ----

def test_server_timing_on_every_response(api):
    ok = api.get("/.well-known/jwks.json")
    t = server_timing(ok)
    assert t["upstream"] > 0, t
    assert server_timing(api.get("/v1/nothing-here")).get("upstream") == 0  # 404 at the edge
    assert server_timing(api.get("/healthz"))["gw"] >= 0
    assert server_timing(api.me("not-a-token"))["upstream"] == 0            # 401 at the edge


def test_traceparent_kept_from_client(cluster, api):
    r = api.get("/.well-known/jwks.json", headers={"traceparent": CLIENT_TP})
    assert r.status_code == 200
    rec = cluster.gateway.access_log(r.headers["X-Request-Id"])
    assert rec, "no access-log line"
    assert rec["trace_id"] == CLIENT_TRACE, rec


@pytest.mark.parametrize("bad", [
    None,
    "garbage",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   # zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   # zero parent id
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   # uppercase
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   # unknown version
])
def test_traceparent_generated_when_absent_or_invalid(cluster, api, bad):
    h = {"traceparent": bad} if bad else {}
    seen = set()
    for _ in range(2):
        r = api.get("/.well-known/jwks.json", headers=h)
        assert r.status_code == 200, r.text   # a bad traceparent never fails a request
        rec = cluster.gateway.access_log(r.headers["X-Request-Id"])
        assert rec and re.fullmatch(r"[0-9a-f]{32}", rec["trace_id"]), rec
        assert rec["trace_id"] != "0" * 32 and rec["trace_id"] != CLIENT_TRACE.upper()
        seen.add(rec["trace_id"])
    assert len(seen) == 2, "each request without a usable traceparent starts its own trace"


# ---- the policy file's faults ----

def test_rule_abort(fc):
    api = fc.api()
    before = faults_total(fc.gateway, route="/v1/auth/logout", kind="abort")
    for _ in range(3):
        r = api.post("/v1/auth/logout", {"refresh_token": "x"})
        body = assert_problem(r, 503)
        assert body["detail"] == "fault injected", body
        assert r.headers.get("Retry-After"), r.headers
    assert faults_total(fc.gateway, route="/v1/auth/logout", kind="abort") == before + 3
    rec = fc.gateway.access_log(r.headers["X-Request-Id"])
    assert rec["fault"] == "abort=503" and rec["status"] == 503, rec
    assert rec["upstream_ms"] == 0, rec
    # other routes are untouched
    assert api.login(cairn.ADMIN_EMAIL, cairn.ADMIN_PASSWORD).status_code == 200


def test_rule_delay(fc):
    api = fc.api()
    before = faults_total(fc.gateway, route="/.well-known/jwks.json", kind="delay")
    r, took = timed(api.get, "/.well-known/jwks.json")
    assert r.status_code == 200, r.text
    assert took >= 0.150, took
    t = server_timing(r)
    assert 150 <= t["fault"] < 150 + 100, t
    assert faults_total(fc.gateway, route="/.well-known/jwks.json", kind="delay") == before + 1
    rec = fc.gateway.access_log(r.headers["X-Request-Id"])
    assert rec["fault"] == "delay=150ms", rec
    assert rec["duration_ms"] >= 150, rec


def test_header_faults(fc):
    api = fc.api()
    # abort on a route no rule covers
    r = api.post("/v1/auth/login", {"email": "nobody@example.com", "password": "x"},
                 headers={"X-Fault-Abort": "429"})
    body = assert_problem(r, 429)
    assert body["detail"] == "fault injected"
    # a delay, then the service's real answer (a refresh token it never issued)
    r, took = timed(api.post, "/v1/auth/refresh", {"refresh_token": "nonsense"},
                    headers={"X-Fault-Delay-Ms": "120"})
    assert_problem(r, 401)
    assert took >= 0.120, took
    assert server_timing(r)["upstream"] > 0
    # faults come after authentication: a request refused at the edge waits for nothing
    r, took = timed(api.get, "/v1/auth/me", headers={"X-Fault-Delay-Ms": "500"})
    assert_problem(r, 401)
    assert took < 0.4, took
    # a header overrides the rule of its kind: the keys group's delay becomes 0
    r, took = timed(api.get, "/.well-known/jwks.json", headers={"X-Fault-Delay-Ms": "0"})
    assert r.status_code == 200 and took < 0.150, took
    # delay and abort together
    r, took = timed(api.get, "/.well-known/jwks.json",
                    headers={"X-Fault-Delay-Ms": "50", "X-Fault-Abort": "502"})
    assert_problem(r, 502)
    assert took >= 0.050
    assert fc.gateway.access_log(r.headers["X-Request-Id"])["fault"] == "delay=50ms,abort=502"
    # malformed values say which header is wrong
    assert_problem(api.get("/.well-known/jwks.json", headers={"X-Fault-Abort": "200"}), 400,
                   field="X-Fault-Abort")
    assert_problem(api.get("/.well-known/jwks.json", headers={"X-Fault-Delay-Ms": "-5"}), 400,
                   field="X-Fault-Delay-Ms")


def test_delay_beyond_the_timeout_is_a_504_in_time(fc):
    api = fc.api()
    r, took = timed(api.post, "/v1/auth/login", {"email": "nobody@example.com", "password": "x"},
                    headers={"X-Fault-Delay-Ms": "5000"})
    body = assert_problem(r, 504)
    assert "fault delay" in body["detail"] and f"the route's {TIMEOUT_MS} ms" in body["detail"], body
    assert TIMEOUT_MS / 1000 <= took < TIMEOUT_MS / 1000 + MARGIN_S, took


def test_traceparent_reaches_the_service(fc):
    api = fc.api()
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    rids = []
    for _ in range(4):   # two replicas: some call lands on each
        r = api.get("/.well-known/jwks.json", headers={"traceparent": tp, "X-Fault-Delay-Ms": "0"})
        assert r.status_code == 200
        rids.append(r.headers["X-Request-Id"])
    logs = ""
    for a in fc.auths:
        with open(a.log, "rb") as f:
            logs += f.read().decode(errors="replace")
    # the services log each call with the request id and the trace id
    for rid in rids:
        assert re.search(r'"request_id":"%s".*trace_id=0af7651916cd43dd8448eb211c80319c' % rid, logs), rid
    assert fc.gateway.access_log(rids[0])["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


# ---- a service instance made to fail through its admin port ----

def test_admin_faults_need_the_setting(cluster):
    # the gateway's admin port never serves /faults; a service's does only with
    # CAIRN_ADMIN_FAULTS=1 (the harness sets it)
    assert requests.get(cluster.gateway.admin_url + "/faults", timeout=5).status_code == 404
    r = requests.put(cluster.auth.admin_url + "/faults", json={"bogus": 1}, timeout=5)
    assert r.status_code == 400 and "bogus" in r.json()["error"], r.text


def test_one_instance_failing(fc, stack, key_file, log_dir):
    bad, good = fc.auths
    # A gateway that only knows the bad replica sees it fail...
    lone = cairn.Gateway("g340-lone", [bad.addr], log_dir, {"CAIRN_READY_SERVICES": "auth"},
                         events_addrs=[bad.events_addr])
    lone.start().wait_ready()
    try:
        api = cairn.Api(lone.url)
        bad.set_faults(abort_code="UNAVAILABLE", methods=["GetJwks"])
        try:
            for _ in range(3):
                r = api.get("/.well-known/jwks.json", headers={"X-Fault-Delay-Ms": "0"})
                body = assert_problem(r, 503)
                assert body["detail"] == "fault injected", body
            # only the methods named
            assert api.login(cairn.ADMIN_EMAIL, cairn.ADMIN_PASSWORD).status_code == 200
            assert metric_sum(bad.metrics(), "cairn_rpc_faults_injected_total",
                              method="GetJwks", kind="abort") >= 3
            assert metric_sum(good.metrics(), "cairn_rpc_faults_injected_total") == 0
            # ...while the gateway in front of both keeps answering: the refusal is
            # UNAVAILABLE before the handler ran, so it retries on the other replica.
            api2 = fc.api()
            injected = metric_sum(bad.metrics(), "cairn_rpc_faults_injected_total")
            rids = []
            for _ in range(12):
                r = api2.get("/.well-known/jwks.json", headers={"X-Fault-Delay-Ms": "0"})
                assert r.status_code == 200, r.text
                rids.append(r.headers["X-Request-Id"])
            recs = [fc.gateway.access_log(rid) for rid in rids]
            retried = [x for x in recs if x["attempts"] >= 2]
            if metric_sum(bad.metrics(), "cairn_rpc_faults_injected_total") > injected:
                assert retried, recs
            for x in retried:
                assert x["instance"] == good.addr, x
            assert all(x["attempts"] >= 1 for x in recs), recs
        finally:
            assert bad.set_faults() == {"delay_ms": 0, "delay_percent": 0.0, "abort_code": "",
                                        "abort_percent": 0.0, "methods": []}
        r = api.get("/.well-known/jwks.json", headers={"X-Fault-Delay-Ms": "0"})
        assert r.status_code == 200, r.text
    finally:
        lone.stop()
