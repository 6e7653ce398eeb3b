"""Small XGBoost models for the inference system tests, trained at test time with Debian's
python3-xgboost 1.7.4 (the same library version the service links), with the rows to
predict and Python's own predictions for them, so tests can compare the service to
XGBoost itself.

Training runs in a child `/usr/bin/python3 xgbmodels.py <dir> <spec>`, never in the test
process: libgomp hangs in a child forked after OpenMP started, and the harness forks to
start every Cairn process. The test process needs only numpy.

  ModelSet(root)        one per session (conftest's `models` fixture); get(spec) trains
                        on first use and caches in root/<spec>/
  Trained               paths of the model in each format (json, ubj, bin), its metadata
                        as XGBoost reads each file back, and the test rows:
                          X      50 rows (float32 values, exact in JSON)
                          Xm     X with about 15% missing (NaN)
                          Xi     50 rows of small integers (for the INT datatypes)
                        with Python's predictions pred, pred_m, pred_i: (50,) or (50, C)
  rows(a)               a numpy array as JSON rows, NaN as null

To add a model: an entry in SPECS (objective, features, rounds, seed; names, types,
classes, rows as needed).
"""

import json
import os
import subprocess
import sys
import threading

import numpy as np

PYTHON = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))

SPECS = {
    "binary": dict(objective="binary:logistic", features=4, rounds=12, seed=1),
    "binary_b": dict(objective="binary:logistic", features=4, rounds=6, seed=2),
    "binary_c": dict(objective="binary:logistic", features=4, rounds=3, seed=7),
    "binary_named": dict(objective="binary:logistic", features=4, rounds=10, seed=3,
                         names=["age", "income", "score", "tenure"],
                         types=["q", "q", "int", "q"]),
    "binary_named_b": dict(objective="binary:logistic", features=4, rounds=4, seed=4,
                           names=["age", "income", "score", "tenure"]),
    "multi": dict(objective="multi:softprob", features=4, rounds=8, seed=5, classes=3),
    "multi_named": dict(objective="multi:softprob", features=4, rounds=6, seed=6, classes=3,
                        names=["sepal_len", "sepal_wid", "petal_len", "petal_wid"]),
    "reg": dict(objective="reg:squarederror", features=5, rounds=15, seed=8),
    "reg_named": dict(objective="reg:squarederror", features=5, rounds=9, seed=9,
                      names=["temp", "humidity", "wind", "pressure", "hour"]),
    # Drift: a numeric feature the tests shift, one they leave alone, and a category.
    "drift": dict(objective="reg:squarederror", features=3, rounds=5, seed=10,
                  names=["shifted", "steady", "plan"]),
    # Wider than any service should accept (10 000 columns), one tiny tree.
    "wide": dict(objective="binary:logistic", features=10000, rounds=1, seed=11, rows=4),
}

N_TEST = 50


# ---------------------------------------------------------------- test side (numpy only)

def rows(a):
    """A 2-D numpy array as a list of JSON rows: float32 values as exact Python floats,
    NaN as None (the API's missing value)."""
    out = []
    for r in np.asarray(a):
        out.append([None if np.isnan(v) else float(v) for v in r])
    return out


class Trained:
    def __init__(self, name, d):
        self.name = name
        self.dir = d
        with open(os.path.join(d, "meta.json")) as f:
            m = json.load(f)
        self.spec = m["spec"]
        self.meta = m["formats"]          # format -> what XGBoost reads from that file
        self.objective = self.spec["objective"]
        self.num_features = self.spec["features"]
        self.num_classes = self.spec.get("classes", 0)
        self.feature_names = self.spec.get("names") or []
        data = np.load(os.path.join(d, "data.npz"))
        self.X, self.Xm, self.Xi = data["X"], data["Xm"], data["Xi"]
        self.pred, self.pred_m, self.pred_i = data["pred"], data["pred_m"], data["pred_i"]

    def path(self, fmt):
        return os.path.join(self.dir, f"model.{fmt}")

    def data(self, fmt="json"):
        with open(self.path(fmt), "rb") as f:
            return f.read()

    @property
    def outputs(self):
        return self.num_classes or 1


class ModelSet:
    """Models trained on demand into root, each once per session."""

    def __init__(self, root):
        self.root = root
        self.cache = {}
        self.lock = threading.Lock()
        os.makedirs(root, exist_ok=True)

    def get(self, name):
        with self.lock:
            if name not in self.cache:
                d = os.path.join(self.root, name)
                if not os.path.exists(os.path.join(d, "meta.json")):
                    r = subprocess.run([PYTHON, os.path.abspath(__file__), d, name],
                                       capture_output=True, text=True, timeout=120)
                    if r.returncode != 0:
                        raise RuntimeError(f"training {name} failed:\n{r.stderr}")
                self.cache[name] = Trained(name, d)
            return self.cache[name]


# ---------------------------------------------------------------- training side (child)

def _labels(X, spec, rng):
    n = X.shape[0]
    obj = spec["objective"]
    if obj == "binary:logistic":
        z = X[:, 0] + 0.5 * X[:, 1 % X.shape[1]] - X[:, 2 % X.shape[1]] * X[:, 3 % X.shape[1]]
        return (z + rng.normal(scale=0.3, size=n) > 0).astype(np.float32)
    if obj == "multi:softprob":
        s = np.stack([X[:, 0], X[:, 1] - X[:, 2], -X[:, 0] + X[:, 3]], axis=1)
        return np.argmax(s + rng.normal(scale=0.3, size=s.shape), axis=1).astype(np.float32)
    return (2 * X[:, 0] + np.sin(X[:, 1]) + rng.normal(scale=0.1, size=n)).astype(np.float32)


def _features(rng, n, spec):
    X = rng.normal(size=(n, spec["features"]))
    if spec.get("names") and "plan" in spec["names"]:
        X[:, spec["names"].index("plan")] = rng.integers(0, 4, size=n)
    # Three decimals, then float32: every value is exact in float32 and in JSON.
    return np.round(X, 3).astype(np.float32)


def _train(d, name):
    import xgboost as xgb

    spec = SPECS[name]
    rng = np.random.default_rng(spec["seed"])
    n_train = spec.get("rows", 400)
    X = _features(rng, n_train, spec)
    y = _labels(X, spec, rng)
    params = {"nthread": 1, "max_depth": 3, "eta": 0.3, "objective": spec["objective"],
              "seed": spec["seed"]}
    if spec.get("classes"):
        params["num_class"] = spec["classes"]
    dtrain = xgb.DMatrix(X, label=y, feature_names=spec.get("names"),
                         feature_types=spec.get("types"), nthread=1)
    booster = xgb.train(params, dtrain, spec["rounds"])

    os.makedirs(d, exist_ok=True)
    booster.save_model(os.path.join(d, "model.json"))
    booster.save_model(os.path.join(d, "model.ubj"))
    with open(os.path.join(d, "model.bin"), "wb") as f:
        f.write(booster.save_raw("deprecated"))

    formats = {}
    for fmt in ("json", "ubj", "bin"):
        b = xgb.Booster(model_file=os.path.join(d, f"model.{fmt}"))
        cfg = json.loads(b.save_config())["learner"]
        formats[fmt] = {
            "num_features": b.num_features(),
            "feature_names": list(b.feature_names or []),
            "feature_types": list(b.feature_types or []),
            "objective": cfg["objective"]["name"],
            "num_classes": int(cfg["learner_model_param"]["num_class"]),
            "rounds": b.num_boosted_rounds(),
            "booster": cfg["gradient_booster"]["name"],
        }

    # Test rows depend on the width only: every model of a width predicts the same rows,
    # so a test may send rows to whichever version serves and check the answer against
    # the version the service names.
    n_test = min(N_TEST, n_train)
    trng = np.random.default_rng(1000 + spec["features"] * 7 + n_test)
    Xt = _features(trng, n_test, spec)
    Xm = Xt.copy()
    Xm[trng.random(Xm.shape) < 0.15] = np.nan
    Xi = np.round(trng.normal(scale=2.0, size=Xt.shape)).astype(np.float32)

    def predict(A):
        # Through a DMatrix with NaN as missing: what a Python user of the model gets.
        dm = xgb.DMatrix(A, missing=np.nan, feature_names=booster.feature_names,
                         feature_types=booster.feature_types, nthread=1)
        return booster.predict(dm).astype(np.float32)

    np.savez(os.path.join(d, "data.npz"), X=Xt, Xm=Xm, Xi=Xi, pred=predict(Xt),
             pred_m=predict(Xm), pred_i=predict(Xi))
    # meta.json last: its presence means the folder is complete.
    tmp = os.path.join(d, "meta.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"spec": spec, "formats": formats}, f)
    os.replace(tmp, os.path.join(d, "meta.json"))


if __name__ == "__main__":
    _train(sys.argv[1], sys.argv[2])
