"""Aliases moved and experiments changed while four clients predict without pause: every
answer is a 200 from one of the versions in play, and it is exactly what that version
predicts (a booster is never freed or swapped under a request). The ASan run of this file
is the leak and race check of reference counting in the model cache."""

import threading
import time

from cairn import Api, assert_close, wait_until

DURATION_S = 3.0
CLIENTS = 4


def test_alias_and_experiment_changes_under_load(iapi, modeler, models):
    auth = modeler.access
    specs = {1: "binary", 2: "binary_b", 3: "binary_c"}
    trained = {v: models.get(s) for v, s in specs.items()}
    name = iapi.new_model(auth, "churn-under-load")
    for v in (1, 2, 3):
        assert iapi.upload(auth, name, trained[v], "ubj")["version"] == v
    iapi.alias_ok(auth, name, "production", 1)

    stop = threading.Event()
    problems = []
    counts = {"v1": 0, "v2": 0, "by_version": {1: 0, 2: 0, 3: 0}}
    lock = threading.Lock()

    def client(k):
        api = Api(iapi.base)
        i = k
        while not stop.is_set():
            rows = slice(i % 45, i % 45 + 5)
            X = trained[1].X[rows]
            if i % 3 == 0:
                r = api.infer(auth, name, {"inputs": [{
                    "name": "input-0", "shape": list(X.shape), "datatype": "FP32",
                    "data": X.reshape(-1).tolist()}]},
                    version="production")
            else:
                r = api.predict(auth, name, X.tolist())
            try:
                assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
                body = r.json()
                if i % 3 == 0:
                    v = int(body["model_version"])
                    got = body["outputs"][0]["data"]
                    kind = "v2"
                else:
                    v = body["model_version"]
                    got = body["predictions"]
                    kind = "v1"
                assert v in trained, f"model_version {v!r}"
                assert_close(got, trained[v].pred[rows], what=f"version {v}")
                with lock:
                    counts[kind] += 1
                    counts["by_version"][v] += 1
            except AssertionError as e:
                with lock:
                    problems.append(f"request {i} of client {k}: {e}")
            i += CLIENTS

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    changes = 0
    try:
        deadline = time.monotonic() + DURATION_S
        while time.monotonic() < deadline and not problems:
            step = changes % 6
            if step == 0:
                iapi.alias_ok(auth, name, "production", 2)
            elif step == 1:
                iapi.experiment_ok(auth, name, [{"alias": "production", "weight": 1},
                                                {"version": 3, "weight": 1}])
            elif step == 2:
                iapi.alias_ok(auth, name, "production", 3)
            elif step == 3:
                iapi.experiment_ok(auth, name, [{"version": 1, "weight": 1}],
                                   mirror={"version": 2, "percent": 50})
            elif step == 4:
                assert iapi.delete_experiment(auth, name).status_code == 204
            else:
                iapi.alias_ok(auth, name, "production", 1)
            changes += 1
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not problems, f"{len(problems)} bad answers, first ones:\n" + "\n".join(problems[:5])
    assert changes >= 6, f"only {changes} changes in {DURATION_S} s"
    assert counts["v1"] > 0 and counts["v2"] > 0, counts
    assert all(n > 0 for n in counts["by_version"].values()), counts

    # Settled: the last move is what serves.
    iapi.delete_experiment(auth, name)
    iapi.alias_ok(auth, name, "production", 2)
    wait_until(lambda: iapi.predicted(auth, name, trained[2].X[:1].tolist())["model_version"] == 2,
               timeout=5, what="the final alias to serve")
