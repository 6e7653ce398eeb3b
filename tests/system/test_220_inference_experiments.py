"""Experiments: traffic split by weight (within a binomial tolerance), sticky assignment by
a header or by a field of the instance, a mirror that gets a copy of every request whose
answers are only logged, and the stats report: outcomes joined from feedback, a
significance test between variants (checked here against the textbook formulas), and a
winner only when the difference is significant."""

import math
import time

import pytest

from cairn import as_int, assert_problem, parallel, wait_until

Z975 = 1.959963984540054  # the 0.975 quantile of the standard normal


# ---------------------------------------------------------------- textbook statistics

def ztest(s1, n1, s2, n2, alpha=0.05):
    """Two-proportion z-test of variant (s2/n2) against control (s1/n1): pooled standard
    error for the statistic, unpooled for the interval of p2 - p1."""
    p1, p2 = s1 / n1, s2 / n2
    pool = (s1 + s2) / (n1 + n2)
    se0 = math.sqrt(pool * (1 - pool) * (1 / n1 + 1 / n2))
    z = (p2 - p1) / se0 if se0 > 0 else 0.0
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    assert alpha == 0.05
    return {"difference": p2 - p1, "statistic": z, "p_value": math.erfc(abs(z) / math.sqrt(2)),
            "ci_low": p2 - p1 - Z975 * se, "ci_high": p2 - p1 + Z975 * se}


def _betacf(a, b, x):
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c
        step = d * c
        h *= step
        if abs(step - 1) < 1e-16:
            break
    return h


def betainc(a, b, x):
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) +
                     a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_two_sided(t, df):
    return betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(p_two_sided, df):
    lo, hi = 0.0, 1000.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_two_sided(mid, df) > p_two_sided:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def welch(x1, x2, alpha=0.05):
    """Welch's t-test of variant (x2) against control (x1)."""
    n1, n2 = len(x1), len(x2)
    m1, m2 = sum(x1) / n1, sum(x2) / n2
    v1 = sum((v - m1) ** 2 for v in x1) / (n1 - 1)
    v2 = sum((v - m2) ** 2 for v in x2) / (n2 - 1)
    se2 = v1 / n1 + v2 / n2
    t = (m2 - m1) / math.sqrt(se2)
    df = se2 ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    half = t_quantile(alpha, df) * math.sqrt(se2)
    return {"difference": m2 - m1, "statistic": t, "p_value": t_two_sided(t, df),
            "ci_low": m2 - m1 - half, "ci_high": m2 - m1 + half}


def test_the_reference_formulas():
    # Table values: t = 2.0 with 10 degrees of freedom has two-sided p 0.0733880; the
    # 0.975 quantile of t(10) is 2.2281389, of t(1e6) the normal's; |t| > 1 with one
    # degree of freedom (Cauchy) has p 1/2; 50/100 against 65/100 is z = 2.1456, p 0.0319.
    assert abs(t_two_sided(2.0, 10) - 0.0733880) < 1e-7
    assert abs(t_quantile(0.05, 10) - 2.2281389) < 1e-7
    assert abs(t_quantile(0.05, 1e6) - Z975) < 1e-5
    assert abs(t_two_sided(1.0, 1) - 0.5) < 1e-12
    z = ztest(50, 100, 65, 100)
    assert abs(z["statistic"] - 2.1456) < 1e-4 and abs(z["p_value"] - 0.0319) < 1e-4


def close(got, want, rel=1e-4, abs_=1e-9):
    return abs(got - want) <= max(abs_, rel * abs(want))


def assert_comparison(c, want, what):
    for k, v in want.items():
        assert close(c[k], v), f"{what}: {k} is {c[k]!r}, the formula gives {v!r}: {c}"


# ---------------------------------------------------------------- helpers

def two_versions(iapi, auth, models, a="binary", b="binary_b", tag="exp"):
    name = iapi.new_model(auth, tag)
    ta, tb = models.get(a), models.get(b)
    iapi.upload(auth, name, ta)
    iapi.upload(auth, name, tb)
    return name, {1: ta, 2: tb}


def predict_many(base, auth, name, n, trained_by_version, headers_of=None):
    """n single-row predictions on 4 threads (row i % 50 of the test rows); checks each
    answer is 200 and is what Python predicts for that row with the version it names.
    Returns [(i, body)]."""
    any_t = next(iter(trained_by_version.values()))

    def one(api, i):
        row = any_t.X[i % len(any_t.X)]
        r = api.predict(auth, name, [row.tolist()],
                        headers=headers_of(i) if headers_of else None)
        assert r.status_code == 200, f"request {i}: {r.status_code} {r.text[:300]}"
        body = r.json()
        t = trained_by_version[body["model_version"]]
        assert abs(body["predictions"][0] - float(t.pred[i % len(t.X)])) <= 1e-6, (i, body)
        return i, body

    return parallel(base, one, range(n))


def variants_of(stats):
    return {v["variant"]: v for v in stats["variants"]}


def stats_when(iapi, auth, name, pred, what, timeout=10):
    """Polls GET stats until pred(stats) holds (the log is written asynchronously)."""
    def ready():
        r = iapi.stats(auth, name)
        assert r.status_code == 200, r.text
        s = r.json()
        return s if pred(s) else None
    return wait_until(ready, timeout=timeout, interval=0.1, what=what)


# ---------------------------------------------------------------- split, stickiness, mirror

def test_weights_split_traffic(iapi, modeler, models):
    name, by_version = two_versions(iapi, modeler.access, models, tag="split")
    t0 = time.time() * 1000
    exp = iapi.experiment_ok(modeler.access, name, [{"version": 1, "weight": 80},
                                                    {"version": 2, "weight": 20}])
    assert exp["model"] == name and exp["sticky_key"] == "" and exp["mirror"] is None, exp
    assert [(c["version"], c["alias"], c["weight"], c["variant"]) for c in exp["candidates"]] == [
        (1, "", 80, "v1"), (2, "", 20, "v2")], exp
    assert abs(as_int(exp["started_at"]) - t0) < 60_000, exp
    r = iapi.get_experiment(modeler.access, name)
    assert r.status_code == 200 and r.json() == exp, r.text
    assert iapi.get_model(modeler.access, name).json()["experiment"] == exp

    n = 400
    answers = predict_many(iapi.base, modeler.access, name, n, by_version)
    for _, body in answers:
        assert body["variant"] == f"v{body['model_version']}", body
    n1 = sum(1 for _, b in answers if b["model_version"] == 1)
    sigma = math.sqrt(n * 0.8 * 0.2)
    assert abs(n1 - 0.8 * n) <= 4 * sigma, f"{n1} of {n} went to the 80% variant"

    # Asking for a version bypasses the experiment.
    body = iapi.predicted(modeler.access, name, [by_version[1].X[0].tolist()], version=2)
    assert body["model_version"] == 2 and body["variant"] == "default", body
    r = iapi.delete_experiment(modeler.access, name)
    assert r.status_code == 204, r.text
    assert_problem(iapi.get_experiment(modeler.access, name), 404)
    assert iapi.get_model(modeler.access, name).json()["experiment"] is None
    body = iapi.predicted(modeler.access, name, [by_version[1].X[0].tolist()])
    assert body["model_version"] == 2 and body["variant"] == "default", body


def test_sticky_by_header(iapi, modeler, models):
    name, by_version = two_versions(iapi, modeler.access, models, tag="sticky")
    iapi.experiment_ok(modeler.access, name, [{"version": 1, "weight": 1},
                                              {"version": 2, "weight": 1}],
                       sticky_key="header:X-User-Id")
    alice = predict_many(iapi.base, modeler.access, name, 100, by_version,
                         headers_of=lambda i: {"X-User-Id": "alice"})
    assert len({b["variant"] for _, b in alice}) == 1, "alice saw both variants"

    users = 40
    answers = predict_many(iapi.base, modeler.access, name, users * 3, by_version,
                           headers_of=lambda i: {"X-User-Id": f"user-{i % users}"})
    seen = {}
    for i, body in answers:
        seen.setdefault(i % users, set()).add(body["variant"])
    assert all(len(v) == 1 for v in seen.values()), seen
    assert {v for s in seen.values() for v in s} == {"v1", "v2"}, "one variant got every user"


def test_sticky_by_instance_field(iapi, modeler, models):
    name, by_version = two_versions(iapi, modeler.access, models, "binary_named",
                                    "binary_named_b", tag="sticky-field")
    iapi.experiment_ok(modeler.access, name, [{"version": 1, "weight": 1},
                                              {"version": 2, "weight": 1}],
                       sticky_key="field:tenure")
    t = by_version[1]
    seen = {}
    for k in range(16):
        tenure = float(k + 1)
        for j in range(4):
            # The other features change from call to call; the key is tenure alone.
            x = t.X[(k * 4 + j) % len(t.X)].tolist()
            x[3] = tenure
            body = iapi.predicted(modeler.access, name, [dict(zip(t.feature_names, x))])
            seen.setdefault(tenure, set()).add(body["variant"])
    assert all(len(v) == 1 for v in seen.values()), seen
    assert {v for s in seen.values() for v in s} == {"v1", "v2"}, seen


def test_mirror_is_logged_not_answered(iapi, modeler, models):
    name, by_version = two_versions(iapi, modeler.access, models, tag="mirror")
    exp = iapi.experiment_ok(modeler.access, name, [{"version": 1, "weight": 1}],
                             mirror={"version": 2, "percent": 100})
    assert exp["mirror"]["version"] == 2 and exp["mirror"]["percent"] == 100, exp
    n = 30
    for _, body in predict_many(iapi.base, modeler.access, name, n, by_version):
        assert body["model_version"] == 1 and body["variant"] == "v1", body
    s = stats_when(iapi, modeler.access, name,
                   lambda s: variants_of(s).get("mirror", {}).get("requests") == n,
                   what="the mirror's predictions in the log")
    v = variants_of(s)
    assert v["mirror"]["version"] == 2 and v["mirror"]["errors"] == 0, v
    assert v["v1"]["version"] == 1 and v["v1"]["requests"] == n, v
    # The mirror's version is part of the experiment: it cannot be deleted.
    assert_problem(iapi.delete_version(modeler.access, name, 2), 409)


# ---------------------------------------------------------------- outcomes and the winner

def run_with_outcomes(iapi, auth, models, n, correct=None, tag="ab", rewards=None):
    """An A/B experiment (variants a = version 1, b = version 2, equal weights) on a
    fresh model; n predictions; feedback for each: a label that makes the k-th answer of
    variant v right when correct[v](k), or, with rewards, reward rewards[v](k). Waits
    until stats count every outcome and returns (stats, per-variant outcome lists)."""
    name, by_version = two_versions(iapi, auth, models, tag=tag)
    iapi.experiment_ok(auth, name, [{"version": 1, "weight": 1, "variant": "a"},
                                    {"version": 2, "weight": 1, "variant": "b"}])
    answers = predict_many(iapi.base, auth, name, n, by_version)
    per = {"a": [], "b": []}
    feedback = []
    for _, body in answers:
        v = body["variant"]
        k = len(per[v])
        p = body["predictions"][0]
        if rewards:
            outcome = rewards[v](k)
            feedback.append({"request_id": body["request_id"], "reward": outcome})
        else:
            said = 1.0 if p >= 0.5 else 0.0
            label = said if correct[v](k) else 1.0 - said
            outcome = (label, p)
            feedback.append({"request_id": body["request_id"], "label": label})
        per[v].append(outcome)
    assert per["a"] and per["b"], "one variant got nothing"

    def send(api, fb):
        r = api.feedback(auth, name, **fb)
        assert r.status_code == 204, r.text
    parallel(iapi.base, send, feedback)

    s = stats_when(iapi, auth, name,
                   lambda s: all(variants_of(s).get(v, {}).get("outcomes") == len(per[v])
                                 for v in per),
                   what="every outcome in the stats")
    return s, per


def check_variants(s, per, metric):
    v = variants_of(s)
    assert set(v) == {"a", "b"}, v
    for name, outcomes in per.items():
        st = v[name]
        assert st["version"] == {"a": 1, "b": 2}[name], st
        assert st["requests"] == len(outcomes) and st["errors"] == 0, st
        assert st["metric"] == metric, st
        assert 0 < st["latency_p50_ms"] <= st["latency_p95_ms"] <= st["latency_p99_ms"], st
    return v


def accuracy(outcomes):
    return sum(1 for y, p in outcomes if (p >= 0.5) == (y == 1.0)) / len(outcomes)


def log_loss(outcomes):
    eps = 1e-15
    return -sum(y * math.log(max(p, eps)) + (1 - y) * math.log(max(1 - p, eps))
                for y, p in outcomes) / len(outcomes)


def test_a_clearly_better_variant_wins(iapi, modeler, models):
    s, per = run_with_outcomes(iapi, modeler.access, models, 160, tag="winner", correct={
        "a": lambda k: k % 2 == 0,     # right half of the time
        "b": lambda k: k % 10 != 0,    # right nine times in ten
    })
    v = check_variants(s, per, "accuracy")
    for name in ("a", "b"):
        assert close(v[name]["metric_value"], accuracy(per[name]), abs_=1e-9), v[name]
        assert close(v[name]["log_loss"], log_loss(per[name]), rel=1e-4), v[name]
    assert s["alpha"] == 0.05, s
    [c] = s["comparisons"]
    assert (c["variant"], c["control"], c["metric"], c["test"]) == (
        "b", "a", "accuracy", "two_proportion_z"), c
    na, nb = len(per["a"]), len(per["b"])
    want = ztest(round(accuracy(per["a"]) * na), na, round(accuracy(per["b"]) * nb), nb)
    assert_comparison(c, want, "b against a")
    assert c["p_value"] < 0.001 and c["significant"] is True and c["higher_is_better"] is True, c
    assert s["winner"] == "b", s


def test_equal_variants_have_no_winner(iapi, modeler, models):
    seven_in_ten = lambda k: k % 10 < 7  # noqa: E731
    s, per = run_with_outcomes(iapi, modeler.access, models, 160, tag="tie",
                               correct={"a": seven_in_ten, "b": seven_in_ten})
    check_variants(s, per, "accuracy")
    [c] = s["comparisons"]
    na, nb = len(per["a"]), len(per["b"])
    want = ztest(round(accuracy(per["a"]) * na), na, round(accuracy(per["b"]) * nb), nb)
    assert_comparison(c, want, "b against a")
    assert c["p_value"] > 0.5 and c["significant"] is False, c
    assert s["winner"] == "", s


def test_rewards_are_compared_with_welch(iapi, modeler, models):
    spread = [-0.4, -0.2, 0.0, 0.2, 0.4]
    s, per = run_with_outcomes(iapi, modeler.access, models, 120, tag="reward", rewards={
        "a": lambda k: 1.0 + spread[k % 5],
        "b": lambda k: 1.18 + spread[(k * 3) % 5],
    })
    v = check_variants(s, per, "mean_reward")
    for name in ("a", "b"):
        mean = sum(per[name]) / len(per[name])
        assert close(v[name]["mean_reward"], mean) and close(v[name]["metric_value"], mean), v
        assert v[name]["rewards"] == len(per[name]), v[name]
    [c] = s["comparisons"]
    assert (c["variant"], c["control"], c["metric"], c["test"]) == (
        "b", "a", "mean_reward", "welch_t"), c
    want = welch(per["a"], per["b"])
    assert_comparison(c, want, "b against a")
    assert want["p_value"] < 0.05  # the data are chosen so
    assert c["significant"] is True and c["higher_is_better"] is True and s["winner"] == "b", s


# ---------------------------------------------------------------- what an experiment may be

@pytest.fixture(scope="module")
def bad_exp_model(inference_cluster, modeler, models):
    """A model with versions 1 and 2 that never gets an experiment."""
    return two_versions(inference_cluster.api(), modeler.access, models, tag="badexp")[0]


@pytest.mark.parametrize("candidates, mirror, sticky_key, field", [
    ([], None, None, "candidates"),
    ([{"version": 1, "weight": 0}], None, None, "candidates[0].weight"),
    ([{"version": 1, "weight": -1}], None, None, "candidates[0].weight"),
    ([{"version": 1, "weight": 1}, {"version": 2, "weight": float("inf")}], None, None,
     "candidates[1].weight"),
    ([{"weight": 1}], None, None, "candidates[0]"),
    ([{"version": 1, "alias": "production", "weight": 1}], None, None, "candidates[0]"),
    ([{"version": 1, "weight": 1}], {"version": 2, "percent": 101}, None, "mirror.percent"),
    ([{"version": 1, "weight": 1}], {"version": 2, "percent": -1}, None, "mirror.percent"),
    ([{"version": 1, "weight": 1}], None, "cookie:uid", "sticky_key"),
    ([{"version": 1, "weight": 1}], None, "header:", "sticky_key"),
])
def test_bad_experiments_are_400(iapi, modeler, bad_exp_model, candidates, mirror, sticky_key,
                                 field):
    name = bad_exp_model
    if any(isinstance(c.get("weight"), float) and math.isinf(c["weight"]) for c in candidates):
        # JSON has no infinity; the gateway's transcoder reads the string form.
        candidates = [{**c, "weight": "Infinity"} if isinstance(c.get("weight"), float)
                      else c for c in candidates]
    r = iapi.set_experiment(modeler.access, name, candidates, mirror, sticky_key)
    assert_problem(r, 400, field=field)
    assert_problem(iapi.get_experiment(modeler.access, name), 404)


def test_experiment_names_and_protects_versions(iapi, modeler, models):
    name, by_version = two_versions(iapi, modeler.access, models, tag="protect")
    assert_problem(iapi.set_experiment(modeler.access, name, [{"version": 9, "weight": 1}]), 404)
    iapi.alias_ok(modeler.access, name, "production", 1)
    exp = iapi.experiment_ok(modeler.access, name, [{"alias": "production", "weight": 3},
                                                    {"version": 2, "weight": 1}])
    assert [(c["alias"], c["version"], c["variant"]) for c in exp["candidates"]] == [
        ("production", 0, "production"), ("", 2, "v2")], exp
    assert_problem(iapi.delete_version(modeler.access, name, 2), 409)
    assert_problem(iapi.delete_alias(modeler.access, name, "production"), 409)
    answers = predict_many(iapi.base, modeler.access, name, 20, by_version)
    for _, body in answers:
        assert (body["variant"], body["model_version"]) in {("production", 1), ("v2", 2)}, body
    assert iapi.delete_experiment(modeler.access, name).status_code == 204
    assert iapi.delete_alias(modeler.access, name, "production").status_code == 204
    assert iapi.delete_version(modeler.access, name, 1).status_code == 204
