"""The prediction log and drift. Every prediction is logged (sampled per model: at rate 0
nothing is) and the stats count what was logged. A version given a reference sample gets
per-feature bins; live inputs are binned the same way, and GET drift reports the PSI of a
window of them against the reference (0.1 moderate, 0.25 significant), which the
inference admin port also exports as the gauge cairn_inference_drift_psi."""

import json
import math
import time

import numpy as np
import pytest

from cairn import Inference, as_int, assert_problem, metric_sum, wait_until
from xgbmodels import rows

N_REF = 500
N_LIVE = 300
FEATURES = ["shifted", "steady", "plan"]


def sample(rng, n, shift=0.0, plan_p=None):
    X = np.empty((n, 3))
    X[:, 0] = rng.normal(loc=shift, size=n)
    X[:, 1] = rng.normal(size=n)
    X[:, 2] = rng.choice(4, size=n, p=plan_p)
    return np.round(X, 3).astype(np.float32)


def shares(values, edges, categorical):
    """Shares of values in the bins the service described by edges."""
    counts = [0] * (len(edges) + 1)
    for v in values:
        if categorical:
            i = edges.index(v) if v in edges else len(edges)
        else:
            i = sum(1 for e in edges if v >= e)
        counts[i] += 1
    return [c / len(values) for c in counts]


def psi(ref, cur):
    """Evidently's PSI: empty bins count as 0.0001."""
    total = 0.0
    for r, c in zip(ref, cur):
        r, c = r or 0.0001, c or 0.0001
        total += (c - r) * math.log(c / r)
    return total


def status_of(v):
    return "significant" if v >= 0.25 else "moderate" if v >= 0.1 else "none"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(236)  # steady stays under 0.07 for any 6..20 bins
    return {"ref": sample(rng, N_REF),
            "live": sample(rng, N_LIVE, shift=1.5, plan_p=[0.1, 0.1, 0.1, 0.7])}


def test_drift_against_the_reference(iapi, modeler, models, inference_cluster, data):
    auth = modeler.access
    name = iapi.new_model(auth, "drift")
    iapi.upload(auth, name, models.get("drift"))
    assert_problem(iapi.drift(auth, name, version="1"), 409)  # no reference yet

    assert_problem(iapi.set_reference(auth, name, 1, [[1, 2]]), 400, field="instances[0]")
    assert_problem(iapi.set_reference(auth, name, 7, rows(data["ref"])), 404)
    r = iapi.set_reference(auth, name, 1, rows(data["ref"]))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and as_int(r.json()["reference_rows"]) == N_REF, r.json()
    assert as_int(iapi.get_version(auth, name, 1).json()["reference_rows"]) == N_REF

    live = data["live"]
    for i in range(0, N_LIVE, 50):
        iapi.predicted(auth, name, rows(live[i:i + 50]), version=1)

    def report():
        r = iapi.drift(auth, name, version="1")
        assert r.status_code == 200, r.text
        rep = r.json()
        return rep if all(as_int(f["current_count"]) == N_LIVE for f in rep["features"]) else None

    rep = wait_until(report, timeout=10, interval=0.2, what="every live row in the drift counts")
    assert rep["model"] == name and rep["version"] == 1, rep
    assert as_int(rep["rows"]) == N_LIVE and as_int(rep["window_s"]) > 0, rep
    assert [f["feature"] for f in rep["features"]] == FEATURES, rep

    want_status = {}
    for j, f in enumerate(rep["features"]):
        categorical = FEATURES[j] == "plan"
        edges = f["edges"]
        assert as_int(f["reference_count"]) == N_REF, f
        assert len(f["reference_share"]) == len(f["current_share"]) == len(edges) + 1, f
        assert abs(sum(f["reference_share"]) - 1) < 1e-9, f
        assert abs(sum(f["current_share"]) - 1) < 1e-9, f
        if categorical:
            assert edges == [0, 1, 2, 3], f
        else:
            assert edges == sorted(edges) and len(edges) >= 4, f
        # The bins hold what the samples put in them (a value exactly on an edge may
        # fall either side: one value's worth of tolerance each).
        mine_ref = shares(data["ref"][:, j].tolist(), edges, categorical)
        mine_cur = shares(live[:, j].tolist(), edges, categorical)
        for have, mine, n in ((f["reference_share"], mine_ref, N_REF),
                              (f["current_share"], mine_cur, N_LIVE)):
            assert all(abs(a - b) <= 2.5 / n for a, b in zip(have, mine)), (f, mine)
        # The PSI is Evidently's formula over those shares, and its status follows.
        assert math.isclose(f["psi"], psi(f["reference_share"], f["current_share"]),
                            rel_tol=1e-6, abs_tol=1e-9), f
        assert f["status"] == status_of(f["psi"]), f
        assert abs(f["psi"] - psi(mine_ref, mine_cur)) < 0.05, f
        want_status[FEATURES[j]] = f["status"]
    assert want_status == {"shifted": "significant", "steady": "none", "plan": "significant"}, rep
    assert rep["status"] == "significant", rep

    # The same figures as gauges on the inference admin port.
    psi_of = {f["feature"]: f["psi"] for f in rep["features"]}
    inf = inference_cluster.inference

    def gauges_agree():
        text = inf.metrics()
        return all(abs(metric_sum(text, "cairn_inference_drift_psi", model=name, version="1",
                                  feature=feat) - v) < 1e-6 for feat, v in psi_of.items())

    wait_until(gauges_agree, timeout=10, interval=0.2, what="cairn_inference_drift_psi gauges")

    # A version without a reference has no drift, and says why.
    iapi.upload(auth, name, models.get("drift"))
    assert_problem(iapi.drift(auth, name, version="2"), 409)
    assert_problem(iapi.drift(auth, name, version="9"), 404)


def stats_requests(iapi, auth, name, since):
    r = iapi.stats(auth, name, since=since)
    assert r.status_code == 200, r.text
    return sum(v["requests"] for v in r.json()["variants"])


def test_prediction_log_and_sampling(iapi, modeler, models, stack):
    auth = modeler.access
    t = models.get("binary")
    since = int(time.time() * 1000) - 60_000
    name = iapi.new_model(auth, "logged")
    iapi.upload(auth, name, t)
    last = None
    for i in range(10):
        last = iapi.predicted(auth, name, t.X[i:i + 2].tolist())
    rid = last["request_id"]
    wait_until(lambda: stats_requests(iapi, auth, name, since) == 10, timeout=10,
               what="10 logged predictions")
    r = iapi.stats(auth, name, since=since).json()
    [v] = r["variants"]
    assert (v["variant"], v["version"], v["requests"], v["errors"]) == ("default", 1, 10, 0), r
    assert r["log_sample_rate"] == 1 and r["winner"] == "" and r["comparisons"] == [], r

    # The last one, as stored: its two rows and two predictions, as real[].
    [(version, variant, status, latency, dims, inputs, outputs)] = stack.sql(
        "SELECT version, variant, status, latency_us, array_dims(input_values), "
        "array_to_json(input_values), array_to_json(output_values) FROM inference.predictions "
        "WHERE model = :'v1' AND request_id = :'v2'", name, rid)
    assert (version, variant, status) == ("1", "default", "ok") and int(latency) > 0
    assert dims == "[1:2][1:%d]" % t.X.shape[1], dims
    for got, want in zip(json.loads(inputs), t.X[9:11].tolist()):
        assert got == pytest.approx(want, rel=1e-6), (got, want)
    assert json.loads(outputs) == pytest.approx(last["predictions"], rel=1e-6)

    # Sampling at 0: nothing more is logged. The rate reaches serving through the routing
    # poll, which nothing outside the service can observe: give it three periods.
    refresh = 3 * Inference.REFRESH_MS / 1000
    r = iapi.update_model(auth, name, log_sample_rate=0)
    assert r.status_code == 200 and r.json()["log_sample_rate"] == 0, r.text
    time.sleep(refresh)
    for i in range(10):
        iapi.predicted(auth, name, t.X[i:i + 1].tolist())
    assert iapi.update_model(auth, name, log_sample_rate=1).status_code == 200
    time.sleep(refresh)
    iapi.predicted(auth, name, t.X[:1].tolist())
    # The log is one queue: once this last one is in, the ten before it would be too.
    wait_until(lambda: stats_requests(iapi, auth, name, since) >= 11, timeout=10,
               what="the last prediction logged")
    assert stats_requests(iapi, auth, name, since) == 11
