"""Models live in Postgres, not in a process: a restarted inference service loads them
again and predicts exactly as before, and two replicas behind one gateway serve the same
versions, an alias moved through one being followed by the other within about a second
(the routing poll, CAIRN_INFERENCE_REFRESH_MS = 200 ms here)."""

import time

from cairn import assert_close, metric_sum, wait_until
from xgbmodels import rows

ALIAS_PROPAGATION_S = 2.0  # "about a second", with room for the ASan build


def served_by(proc, name, version=None):
    labels = {"model": name, "stage": "total"}
    if version is not None:
        labels["version"] = str(version)
    return metric_sum(proc.metrics(), "cairn_inference_predict_seconds_count", **labels)


def test_restart_loads_models_again(new_cluster, models):
    c = new_cluster(inference=1)
    api = c.api()
    u = api.new_user("restart")
    named, multi = models.get("binary_named"), models.get("multi")
    a = api.new_model(u.access, "restart-a")
    b = api.new_model(u.access, "restart-b")
    api.upload(u.access, a, named, "json")
    api.upload(u.access, a, named, "bin")
    api.upload(u.access, b, multi, "ubj")
    api.alias_ok(u.access, a, "production", 2)

    def snapshot():
        out = {}
        for model, t, kw in ((a, named, {}), (a, named, {"version": 1}), (b, multi, {})):
            body = api.predicted(u.access, model, rows(t.Xm), **kw)
            out[(model, tuple(kw.items()))] = (body["model_version"], body["predictions"])
        for model in (a, b):
            r = api.list_versions(u.access, model)
            assert r.status_code == 200, r.text
            out[model] = r.json()["versions"]
        return out

    before = snapshot()
    assert_close(before[(a, ())][1], named.pred_m)
    assert_close(before[(b, ())][1], multi.pred_m)
    pid = c.inference.pid
    c.inference.restart()
    assert c.inference.pid != pid
    wait_until(lambda: api.predict(u.access, b, rows(multi.X[:1])).status_code == 200,
               timeout=10, what="predictions through the gateway after the restart")
    after = snapshot()
    assert after == before, "the restarted service answers differently"
    loads = metric_sum(c.inference.metrics(), "cairn_inference_model_loads_total")
    assert loads >= 3, f"{loads} loads: versions served after the restart were not loaded again?"


def test_two_replicas_serve_the_same_versions(new_cluster, models):
    c = new_cluster(inference=2)
    api = c.api()
    u = api.new_user("replicas")
    t1, t2 = models.get("binary"), models.get("binary_b")
    name = api.new_model(u.access, "replicated")
    api.upload(u.access, name, t1)
    api.upload(u.access, name, t2)
    api.alias_ok(u.access, name, "production", 1)

    def predict_rows(i):
        body = api.predicted(u.access, name, rows(t1.X[i % 45:i % 45 + 5]))
        t = {1: t1, 2: t2}[body["model_version"]]
        assert_close(body["predictions"], t.pred[i % 45:i % 45 + 5])
        return body["model_version"]

    def both_serving():
        predict_rows(0)
        return all(served_by(p, name) > 0 for p in c.inferences)

    # The gateway's connections are up once each replica has answered.
    wait_until(both_serving, timeout=10, what="both replicas serving")
    before = [served_by(p, name, 1) for p in c.inferences]
    versions = {predict_rows(i) for i in range(40)}
    assert versions == {1}, versions

    def deltas():
        return [served_by(p, name, 1) - b for p, b in zip(c.inferences, before)]

    wait_until(lambda: sum(deltas()) == 40, timeout=5, what="40 predictions counted")
    assert all(d > 0 for d in deltas()), f"predictions per replica: {deltas()}"

    t0 = time.monotonic()
    api.alias_ok(u.access, name, "production", 2)
    streak = []

    def all_on_2():
        streak.append(predict_rows(len(streak)))
        return len(streak) >= 10 and set(streak[-10:]) == {2}

    wait_until(all_on_2, timeout=ALIAS_PROPAGATION_S, interval=0.01,
               what="both replicas following the alias")
    took = time.monotonic() - t0
    for i in range(20):
        assert predict_rows(i) == 2
    assert all(served_by(p, name, 2) > 0 for p in c.inferences), \
        [served_by(p, name, 2) for p in c.inferences]
    print(f"alias followed by both replicas in {took:.3f} s")
