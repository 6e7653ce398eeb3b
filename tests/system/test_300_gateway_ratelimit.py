"""Rate limits (gateway/ratelimit.c): two gateways sharing Redis admit exactly a policy's
burst under concurrent load, with the IETF RateLimit headers and Retry-After; with Redis
killed under load every request is still answered at once from the local fallback (and
fail-open / fail-closed policies do what they say), and with Redis back the limits are
global again without a restart; a shadow policy counts but never refuses.

Every test names its policies uniquely: the buckets live in Redis across tests."""

import concurrent.futures
import os
import re
import signal
import shutil
import subprocess
import time
import uuid

import requests

import cairn
from cairn import metric_sum, wait_until

JWKS = "/.well-known/jwks.json"
REFRESH = "/v1/auth/refresh"


def policy_name(tag):
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def write_config(tmp_path, text):
    path = os.path.join(str(tmp_path), f"gateway-{uuid.uuid4().hex[:6]}.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def decisions(gw, policy, outcome):
    return metric_sum(gw.metrics(), "cairn_gateway_ratelimit_decisions_total", policy=policy,
                      outcome=outcome)


def get_all(urls, n, threads=8, timeout=5):
    """n GETs of JWKS spread round-robin over urls, on `threads` threads at once; returns
    [(response, seconds)] in order."""
    def one(i):
        t0 = time.monotonic()
        r = requests.get(urls[i % len(urls)] + JWKS, timeout=timeout)
        return r, time.monotonic() - t0

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        return list(ex.map(one, range(n)))


def test_two_gateways_admit_exactly_the_burst(new_cluster, tmp_path, log_dir):
    name = policy_name("exact")
    limit = 20
    path = write_config(tmp_path, f"""
redis:
  timeout_ms: 200
route_groups:
  jwks: ["GET {JWKS}"]
rate_limits:
  - name: {name}
    groups: [jwks]
    tiers: [anonymous]
    key: ip
    limit: {limit}
    window_s: 3600
""")
    c = new_cluster(gateway_env={"CAIRN_GATEWAY_CONFIG": path})
    g2 = cairn.Gateway(c.gateway.name + "-b", [a.addr for a in c.auths], log_dir,
                       {"CAIRN_GATEWAY_CONFIG": path,
                        "CAIRN_REDIS_ADDR": c.gateway.env["CAIRN_REDIS_ADDR"]},
                       events_addrs=[a.events_addr for a in c.auths])
    g2.start()
    try:
        g2.wait_ready()
        gws = [c.gateway, g2]
        results = get_all([g.url for g in gws], 3 * limit)
        ok = [r for r, _ in results if r.status_code == 200]
        limited = [r for r, _ in results if r.status_code == 429]
        assert len(ok) == limit, [r.status_code for r, _ in results]
        assert len(limited) == 2 * limit, [r.status_code for r, _ in results]

        # Every admitted response saw a different number of requests left: 19 .. 0.
        remaining = []
        for r in ok:
            assert r.headers["RateLimit-Policy"] == f'"{name}";q={limit};w=3600', r.headers
            m = re.fullmatch(rf'"{name}";r=(\d+);t=(\d+)', r.headers["RateLimit"])
            assert m, r.headers["RateLimit"]
            remaining.append(int(m.group(1)))
            assert 0 < int(m.group(2)) <= 3600
        assert sorted(remaining) == list(range(limit)), remaining

        # A refusal: 429, Retry-After about one emission interval (3600 s / 20), the
        # headers, and a problem that names the policy and when to come back.
        interval = 3600 // limit
        for r in limited:
            body = cairn.assert_problem(r, 429)
            retry = int(r.headers["Retry-After"])
            assert interval - 5 <= retry <= interval, r.headers
            assert name in body["detail"] and f"try again in {retry} s" in body["detail"], body
            assert r.headers["RateLimit-Policy"] == f'"{name}";q={limit};w=3600'
            assert re.fullmatch(rf'"{name}";r=0;t=\d+', r.headers["RateLimit"]), r.headers

        # The counters of both gateways add up to the same story.
        assert sum(decisions(g, name, "allowed") for g in gws) == limit
        assert sum(decisions(g, name, "limited") for g in gws) == 2 * limit
        assert sum(decisions(g, name, "fallback_allowed") for g in gws) == 0
        # Routes outside the policy's group carry no rate-limit headers.
        r = requests.post(c.url + "/v1/auth/login", json={"email": "x@example.com", "password": "x"},
                          timeout=5)
        assert "RateLimit-Policy" not in r.headers and "RateLimit" not in r.headers
    finally:
        g2.stop()


class Redis:
    """A private redis-server on a free port, so this test can kill it."""

    def __init__(self, folder):
        self.port = cairn.free_port()
        self.dir = folder
        self.popen = None

    def start(self):
        self.popen = subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=cairn._die_with_parent)
        import socket

        def up():
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        wait_until(up, 10, what="redis-server up")
        return self

    def kill(self):
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(5)


def test_redis_killed_under_load_then_back(new_cluster, tmp_path):
    redis = Redis(str(tmp_path)).start()
    local, opened, closed = policy_name("local"), policy_name("open"), policy_name("closed")
    path = write_config(tmp_path, f"""
redis:
  timeout_ms: 100
  probe_ms: 200
route_groups:
  jwks: ["GET {JWKS}"]
  refresh: ["POST {REFRESH}"]
  logout: ["POST /v1/auth/logout"]
rate_limits:
  - {{name: {local}, groups: [jwks], key: ip, limit: 10, window_s: 3600, on_redis_down: local}}
  - {{name: {opened}, groups: [refresh], key: ip, limit: 1, window_s: 3600, on_redis_down: open}}
  - {{name: {closed}, groups: [logout], key: ip, limit: 100, window_s: 3600, on_redis_down: closed}}
""")
    try:
        c = new_cluster(gateway_env={"CAIRN_GATEWAY_CONFIG": path,
                                     "CAIRN_REDIS_ADDR": f"127.0.0.1:{redis.port}"})
        gw = c.gateway
        # Up: the global bucket admits exactly 10.
        first = [r.status_code for r, _ in get_all([c.url], 15, threads=4)]
        assert first.count(200) == 10 and first.count(429) == 5, first
        assert metric_sum(gw.metrics(), "cairn_gateway_redis_up") == 1

        # Killed under load: every request is answered, quickly, from the local bucket
        # (limit / replicas = 10, fresh in this process).
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            load = ex.submit(get_all, [c.url], 40, 4)
            time.sleep(0.05)
            redis.kill()
            during = load.result()
        after = get_all([c.url], 20, threads=4)
        for r, took in during + after:
            assert r.status_code in (200, 429), r.text
            assert took < 1.0, f"a request took {took:.3f} s"
        assert [r.status_code for r, _ in after].count(200) <= 10
        fb = decisions(gw, local, "fallback_allowed") + decisions(gw, local, "fallback_limited")
        assert fb >= 20, gw.metrics()
        assert decisions(gw, local, "fallback_allowed") <= 10
        assert metric_sum(gw.metrics(), "cairn_gateway_redis_up") == 0
        # Fail-open admits, fail-closed refuses with 503 naming the policy.
        for _ in range(2):
            r = requests.post(c.url + REFRESH, json={"refresh_token": "nope"}, timeout=5)
            assert r.status_code not in (429, 503), r.text
        assert decisions(gw, opened, "failed_open") == 2
        r = requests.post(c.url + "/v1/auth/logout", json={"refresh_token": "nope"}, timeout=5)
        body = cairn.assert_problem(r, 503)
        assert closed in body["detail"] and "Retry-After" in r.headers, body
        assert decisions(gw, closed, "failed_closed") == 1
        with open(gw.log) as f:
            assert f.read().count('"GW-REDIS-DOWN"') == 1

        # Back: the gateway finds Redis by itself, and the limit is global again.
        redis.start()
        wait_until(lambda: metric_sum(gw.metrics(), "cairn_gateway_redis_up") == 1, 5,
                   what="gateway back on Redis")
        before = decisions(gw, local, "allowed")
        back = [r.status_code for r, _ in get_all([c.url], 15, threads=4)]
        assert back.count(200) == 10 and back.count(429) == 5, back
        assert decisions(gw, local, "allowed") - before == 10
        with open(gw.log) as f:
            assert f.read().count('"GW-REDIS-UP"') == 1
    finally:
        redis.kill()


def test_shadow_policy_counts_but_never_refuses(new_cluster, tmp_path):
    name = policy_name("shadow")
    path = write_config(tmp_path, f"""
redis:
  timeout_ms: 200
rate_limits:
  - name: {name}
    key: global
    limit: 2
    window_s: 3600
    mode: shadow
""")
    c = new_cluster(gateway_env={"CAIRN_GATEWAY_CONFIG": path})
    statuses = []
    for _ in range(10):
        r = requests.get(c.url + JWKS, timeout=5)
        statuses.append(r.status_code)
        # Shadow policies are not announced to clients.
        assert "RateLimit-Policy" not in r.headers and "RateLimit" not in r.headers
    assert statuses == [200] * 10
    assert decisions(c.gateway, name, "allowed") == 2
    assert decisions(c.gateway, name, "shadow_limited") == 8
    with open(c.gateway.log) as f:
        log = f.read()
    assert '"GW-RATELIMIT-SHADOW"' in log and name in log
    rec = [line for line in log.splitlines() if '"type":"access"' in line and JWKS in line]
    assert any('"ratelimit":"shadow_limited"' in line for line in rec), rec[-3:]


def test_refused_credentials_count_as_anonymous(new_cluster, tmp_path):
    """Credentials the gateway cannot vouch for are an anonymous caller's: bad tokens and
    unknown API keys use up the address's anonymous limit (then 429, and an unknown key no
    longer reaches auth), while a valid token is counted as its user. Behind a trusted
    proxy the address is the X-Forwarded-For hop, in the limits and in the access log."""
    name = policy_name("anon-me")
    path = write_config(tmp_path, f"""
redis:
  timeout_ms: 200
trusted_proxies: [127.0.0.0/8]
route_groups:
  me: ["GET /v1/auth/me"]
rate_limits:
  - name: {name}
    groups: [me]
    tiers: [anonymous]
    key: ip
    limit: 3
    window_s: 3600
  - name: {name}-user
    groups: [me]
    tiers: [user, key]
    key: user
    limit: 1000
    window_s: 60
""")
    c = new_cluster(gateway_env={"CAIRN_GATEWAY_CONFIG": path})
    api = c.api()
    user = api.new_user()
    secret = api.new_key(user.access)["secret"]
    resolves = lambda: metric_sum(c.auth.metrics(), "cairn_rpc_calls_total", method="ResolveApiKey")

    def me(addr, **kw):
        rid = f"anon-{uuid.uuid4().hex[:12]}"
        headers = {"X-Forwarded-For": addr, "X-Request-Id": rid}
        if "token" in kw:
            headers["Authorization"] = f"Bearer {kw['token']}"
        if "key" in kw:
            headers["X-API-Key"] = kw["key"]
        return requests.get(c.url + "/v1/auth/me", headers=headers, timeout=5), rid

    addr = "198.51.100.7"
    before = resolves()
    got = [me(addr, token="not-a-jwt")[0], me(addr, token="not.a.jwt")[0], me(addr, key=cairn.api_key())[0]]
    assert [r.status_code for r in got] == [401, 401, 401], [r.text for r in got]
    assert all(f'"{name}";q=3;w=3600' in r.headers.get("RateLimit-Policy", "") for r in got)
    wait_until(lambda: resolves() == before + 1, timeout=2, what="the unknown key resolved once")
    # The address's anonymous limit is used up: refused credentials are now 429, and an
    # unknown key is refused before auth is asked about it.
    for kw in ({"token": "not-a-jwt"}, {"key": cairn.api_key()}, {}):
        r, _ = me(addr, **kw)
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert name in r.json()["detail"]
    time.sleep(0.3)
    assert resolves() == before + 1, "an unknown key reached auth past the anonymous limit"
    # A valid token is its user's request, not the address's anonymous one.
    r, _ = me(addr, token=user.access)
    assert r.status_code == 200, r.text
    assert r.headers["RateLimit-Policy"] == f'"{name}-user";q=1000;w=60', r.headers
    # A real key not resolved yet passes the anonymous check of a fresh address quietly:
    # its headers are its owner's only.
    r, _ = me("198.51.100.9", key=secret)
    assert r.status_code == 200, r.text
    assert r.headers["RateLimit-Policy"] == f'"{name}-user";q=1000;w=60', r.headers
    assert r.headers["RateLimit"].startswith(f'"{name}-user";'), r.headers
    # Another client behind the same proxy has its own bucket, and the access log and the
    # service see that client's address.
    r, rid = me("198.51.100.8", token="not-a-jwt")
    assert r.status_code == 401, r.text
    rec = wait_until(lambda: c.gateway.access_log(rid), timeout=2, what="the access-log record")
    assert rec["remote"] == "198.51.100.8", rec
