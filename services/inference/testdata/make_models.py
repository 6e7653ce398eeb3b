#!/usr/bin/python3
"""make_models.py — writes the small XGBoost model files inference_model_test.c loads,
and expected.json: for each file, the metadata and the predictions Debian's
python3-xgboost 1.7.4 gives for a few fixed rows (null = missing). Run it with
/usr/bin/python3 from anywhere; it writes beside itself.
The files are committed (a few KB each) so the unit tests need no Python; rerun this
script only to change them. Deterministic: fixed seeds, nthread=1, exact tree method.
"""
import json
import os

import numpy as np
import xgboost as xgb

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = ["age", "income", "score", "tenure"]

rng = np.random.default_rng(7)
X = rng.normal(size=(300, 4)).astype(np.float32)
ROWS = np.array([[0.5, -1.0, 2.0, 0.0],
                 [-0.3, 0.8, float("nan"), 1.5],
                 [float("nan")] * 4,
                 [1.25, 1.25, -2.5, 0.75]], dtype=np.float32)
PARAMS = {"max_depth": 2, "nthread": 1, "tree_method": "exact", "seed": 0}


def train(objective, y, names, rounds, types=None, **extra):
    d = xgb.DMatrix(X, label=y, feature_names=names, feature_types=types)
    params = dict(PARAMS, objective=objective, **extra)
    if params.get("booster") == "gblinear":
        del params["max_depth"], params["tree_method"]
    return xgb.train(params, d, rounds)


def save(booster, name):
    path = os.path.join(HERE, name)
    if name.endswith(".bin"):
        with open(path, "wb") as f:
            f.write(booster.save_raw("deprecated"))
    else:
        booster.save_model(path)
    return path


def describe(path):
    b = xgb.Booster(model_file=path, params={"nthread": 1})
    cfg = json.loads(b.save_config())["learner"]
    pred = b.predict(xgb.DMatrix(ROWS, missing=np.nan, feature_names=b.feature_names))
    pred = pred.reshape(len(ROWS), -1)
    return {
        "num_features": b.num_features(),
        "objective": cfg["objective"]["name"],
        "num_classes": int(cfg["learner_model_param"]["num_class"]),
        "rounds": b.num_boosted_rounds(),
        "booster": cfg["gradient_booster"]["name"],
        "outputs": pred.shape[1],
        "feature_names": b.feature_names or [],
        "feature_types": b.feature_types or [],
        "predictions": [[float(v) for v in r] for r in pred],
    }


def main():
    y_bin = (X[:, 0] + X[:, 1] > 0).astype(int)
    y_cls = np.digitize(X[:, 2] - X[:, 3], [-0.7, 0.7])
    y_reg = 3 * X[:, 0] - X[:, 2] + 0.1 * rng.normal(size=len(X))

    named = train("binary:logistic", y_bin, NAMES, 5)
    plain = train("binary:logistic", y_bin, None, 4)
    multi = train("multi:softprob", y_cls, None, 3, num_class=3)
    reg = train("reg:squarederror", y_reg, NAMES, 4, types=["q", "q", "int", "q"])
    # gblinear has no in-place prediction in 1.7 (the service falls back to a DMatrix);
    # dart predicts in place with training=false.
    linear = train("binary:logistic", y_bin, None, 3, booster="gblinear")
    dart = train("binary:logistic", y_bin, NAMES, 3, booster="dart")

    files = [save(named, "logistic_named.json"), save(named, "logistic_named.ubj"),
             save(named, "logistic_named.bin"), save(plain, "logistic_plain.json"),
             save(multi, "softprob.ubj"), save(reg, "regression.json"),
             save(reg, "regression.bin"), save(linear, "linear.json"),
             save(dart, "dart.ubj")]
    out = {
        "rows": [[None if np.isnan(v) else float(v) for v in r] for r in ROWS],
        "models": {os.path.basename(p): describe(p) for p in files},
    }
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
