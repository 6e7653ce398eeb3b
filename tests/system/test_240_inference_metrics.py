"""The inference admin port: /healthz and /readyz, and the counters of serving:
cairn_inference_predict_seconds (a histogram per model, version, variant and stage:
queue, compute, total) counting every call of both APIs, model loads, and the bytes
the model cache holds."""

import math

import requests

from cairn import metric_sum, parse_metrics, wait_until
from xgbmodels import rows

STAGES = ("queue", "compute", "total")


def histogram(text, name, **labels):
    """(buckets [(le, count)] sorted by le, sum, count) of one labelled histogram."""
    buckets = []
    for n, ls, v in parse_metrics(text):
        if n == name + "_bucket" and all(ls.get(k) == w for k, w in labels.items()):
            le = math.inf if ls["le"] == "+Inf" else float(ls["le"])
            buckets.append((le, v))
    buckets.sort()
    return (buckets, metric_sum(text, name + "_sum", **labels),
            metric_sum(text, name + "_count", **labels))


def test_admin_port_and_serving_metrics(iapi, modeler, models, inference_cluster):
    inf = inference_cluster.inference
    for path in ("/healthz", "/readyz"):
        assert requests.get(inf.admin_url + path, timeout=5).status_code == 200, path

    auth = modeler.access
    t = models.get("multi")
    loads_before = metric_sum(inf.metrics(), "cairn_inference_model_loads_total")
    name = iapi.new_model(auth, "metered")
    iapi.upload(auth, name, t)
    for i in range(7):
        iapi.predicted(auth, name, rows(t.X[i:i + 3]))
    for i in range(3):
        tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                  "data": rows(t.X[i:i + 1])[0]}
        r = iapi.infer(auth, name, {"inputs": [tensor]})
        assert r.status_code == 200, r.text

    labels = {"model": name, "version": "1", "variant": "default"}
    wait_until(lambda: metric_sum(inf.metrics(), "cairn_inference_predict_seconds_count",
                                  stage="total", **labels) == 10,
               timeout=5, what="10 calls in cairn_inference_predict_seconds")
    text = inf.metrics()
    sums = {}
    for stage in STAGES:
        buckets, total, count = histogram(text, "cairn_inference_predict_seconds",
                                          stage=stage, **labels)
        assert count == 10, (stage, count)
        assert len(buckets) >= 5 and buckets[-1] == (math.inf, count), (stage, buckets)
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), (stage, buckets)
        assert total >= 0, (stage, total)
        sums[stage] = total
    assert 0 < sums["compute"] <= sums["total"] and sums["queue"] <= sums["total"], sums
    assert sums["total"] < 10 * 1.0, f"10 tiny predictions took {sums['total']} s"

    assert metric_sum(text, "cairn_inference_model_loads_total") >= loads_before + 1
    assert metric_sum(text, "cairn_inference_cache_bytes") > 0
