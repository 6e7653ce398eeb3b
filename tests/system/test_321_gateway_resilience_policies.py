"""Issue 5: the gateway's resilience policies from its config file (retries, outlier,
shedding), against fake inference instances (fakesvc.py) that fail or stall on cue:

  - retry budget: a service failing every request sees at most budget-many retries;
  - load shedding: with every instance at shedding.max_outstanding, a request gets 503 +
    Retry-After at once instead of queueing;
  - outlier ejection: an instance failing in a row is ejected (clients see no error:
    its failures are retried elsewhere), probed back after base_ejection_s, ejected again
    for twice as long while it still fails, and back for good once it is healthy.
"""

import os
import threading
import time

from cairn import assert_v2_error, metric_sum, wait_until
from fakesvc import UNAVAILABLE, FakeService


def gateway_with(new_cluster, log_dir, name, yaml, fakes):
    path = os.path.join(log_dir, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(yaml)
    c = new_cluster(gateway_env={"CAIRN_INFERENCE_ADDR": ",".join(x.addr for x in fakes),
                                 "CAIRN_GATEWAY_CONFIG": path})
    wait_until(lambda: metric_sum(c.gateway.metrics(), "cairn_gateway_instances", service="inference",
                                  state="connected") == len(fakes), timeout=5, what="fakes connected")
    return c


def live(api, **kw):
    return api.get("/v2/health/live", **kw)


def test_retry_budget_caps_retries(new_cluster, log_dir):
    fake = FakeService().start()
    try:
        c = gateway_with(new_cluster, log_dir, "budget", """
retries:
  max_attempts: 3
  base_ms: 1
  cap_ms: 2
  budget_percent: 20
  budget_min_per_s: 0
""", [fake])
        fake.behave(code=UNAVAILABLE, retry_after_ms=0)
        api = c.api()
        n = 50
        for _ in range(n):
            assert_v2_error(live(api), 503)
        m = c.gateway.metrics()
        retries = metric_sum(m, "cairn_gateway_retries_total", service="inference")
        # 20 % of 50 requests within the 10 s window; without the budget it would be 100.
        assert retries == n * 20 // 100, m
        assert fake.count("ServerLive") == n + retries
        assert metric_sum(m, "cairn_gateway_retry_budget_exhausted_total", service="inference") > 0
    finally:
        fake.stop()


def test_shedding_when_every_instance_is_saturated(new_cluster, log_dir):
    fake = FakeService().start()
    try:
        c = gateway_with(new_cluster, log_dir, "shed", "shedding:\n  max_outstanding: 2\n", [fake])
        fake.behave(delay_s=1.0)
        api = c.api()
        results = []
        threads = [threading.Thread(target=lambda: results.append(live(c.api()))) for _ in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: fake.count() == 2, timeout=5, what="two calls held")
        t0 = time.monotonic()
        r = live(api)
        took = time.monotonic() - t0
        assert_v2_error(r, 503)
        assert r.headers.get("Retry-After") == "1", r.headers
        assert "saturated" in r.json()["error"], r.text
        assert took < 0.3, took
        assert fake.count() == 2, "the shed request reached the service"
        for t in threads:
            t.join(10)
        assert [x.status_code for x in results] == [200, 200]
        assert live(api).status_code == 200
        m = c.gateway.metrics()
        assert metric_sum(m, "cairn_gateway_shed_total", service="inference") == 1
    finally:
        fake.stop()


def test_outlier_ejected_probed_and_back(new_cluster, log_dir):
    bad, good = FakeService().start(), FakeService().start()
    try:
        c = gateway_with(new_cluster, log_dir, "outlier", """
outlier:
  consecutive_failures: 3
  base_ejection_s: 1
  max_ejection_s: 4
  max_ejected_percent: 50
retries:
  base_ms: 1
  cap_ms: 2
""", [bad, good])
        bad.behave(code=UNAVAILABLE, retry_after_ms=0)
        api = c.api()

        def ejections():
            return metric_sum(c.gateway.metrics(), "cairn_gateway_ejections_total", service="inference")

        # Its failures are retried on the good one: no client error; 3 in a row eject it.
        for _ in range(30):
            assert live(api).status_code == 200
        assert bad.count() == 3, bad.count()
        assert ejections() == 1
        m = c.gateway.metrics()
        assert metric_sum(m, "cairn_gateway_instances", service="inference", state="ejected") == 1
        assert metric_sum(m, "cairn_gateway_instances", service="inference", state="connected") == 1

        # After base_ejection_s it is probed; still failing, it is out again for 2 s.
        time.sleep(1.1)
        wait_until(lambda: live(api).status_code == 200 and bad.count() == 4, timeout=3, what="the probe")
        assert ejections() == 2
        for _ in range(10):
            assert live(api).status_code == 200
        assert bad.count() == 4

        # Healthy again: after its ejection it takes traffic and stays in.
        bad.behave()
        time.sleep(2.1)
        for _ in range(40):
            assert live(api).status_code == 200
        assert bad.count() > 10, bad.count()
        assert ejections() == 2
        m = c.gateway.metrics()
        assert metric_sum(m, "cairn_gateway_instances", service="inference", state="ejected") == 0
        assert metric_sum(m, "cairn_gateway_instances", service="inference", state="connected") == 2
        with open(c.gateway.log) as f:
            log = f.read()
        assert log.count("GW-UPSTREAM-EJECTED") == 2
        assert log.count("GW-UPSTREAM-RETURNED") == 2
    finally:
        bad.stop()
        good.stop()


def test_slow_replica_ejected_and_back(new_cluster, log_dir):
    """A real auth replica made slow through its admin port (PUT /faults) times out, is
    ejected, and takes traffic again once it is fast."""
    path = os.path.join(log_dir, "slow.yaml")
    with open(path, "w") as f:
        f.write("outlier:\n  consecutive_failures: 2\n  base_ejection_s: 1\n")
    c = new_cluster(replicas=2, gateway_env={"CAIRN_GATEWAY_CONFIG": path, "CAIRN_UPSTREAM_TIMEOUT_MS": "300"})
    api = c.api()
    u = api.new_user("slow")
    slow, fast = c.auths

    def me_calls(a):
        return metric_sum(a.metrics(), "cairn_rpc_calls_total", method="Me")

    wait_until(lambda: metric_sum(c.gateway.metrics(), "cairn_gateway_instances", service="auth",
                                  state="connected") == 2, timeout=5, what="both replicas connected")
    slow.set_faults(delay_ms=2000, methods=["Me"])
    # Its calls time out (a timeout is not retried: 504), two in a row eject it.
    statuses = []
    while statuses.count(504) < 2 and len(statuses) < 40:
        statuses.append(api.me(u.access).status_code)
    assert set(statuses) <= {200, 504} and statuses.count(504) == 2, statuses
    for _ in range(10):
        assert api.me(u.access).status_code == 200
    assert metric_sum(c.gateway.metrics(), "cairn_gateway_ejections_total", service="auth") == 1
    slow.set_faults()
    time.sleep(1.1)
    n = me_calls(slow)
    for _ in range(20):
        assert api.me(u.access).status_code == 200
    assert me_calls(slow) > n, "the replica did not come back"
    assert metric_sum(c.gateway.metrics(), "cairn_gateway_instances", service="auth", state="connected") == 2
