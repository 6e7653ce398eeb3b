"""The model registry through the gateway: models are created once under a checked name;
versions are numbered 1, 2, 3 ... whatever format the file came in (XGBoost JSON, UBJSON
or the legacy binary), and carry what XGBoost itself reads from the file; aliases move
atomically, `latest` is implicit and reserved; a version an alias points at cannot be
deleted until the alias moves, and a deleted version's number is never reused."""

import re
import time
import uuid

from cairn import as_int, assert_problem, unique_model_name

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def version_numbers(iapi, auth, name):
    r = iapi.list_versions(auth, name)
    assert r.status_code == 200, r.text
    return [v["version"] for v in r.json()["versions"]]


def assert_metadata(v, trained, fmt, name, version):
    """v (a ModelVersion) says what python3-xgboost reads from the file it came from."""
    want = trained.meta[fmt]
    assert v["model"] == name and v["version"] == version, v
    assert v["source_format"] == {"json": "json", "ubj": "ubjson", "bin": "binary"}[fmt], v
    for k in ("num_features", "feature_names", "feature_types", "objective", "num_classes",
              "rounds", "booster"):
        assert v[k] == want[k], f"{k}: got {v[k]!r}, XGBoost reads {want[k]!r} ({fmt})"
    assert HEX64.match(v["sha256"]), v["sha256"]
    assert as_int(v["size_bytes"]) > 0, v
    assert as_int(v["reference_rows"]) == 0, v


def test_model_names_are_checked_and_unique(iapi, modeler):
    t0 = time.time() * 1000
    name = unique_model_name("churn")
    r = iapi.create_model(modeler.access, name, description="who leaves next month")
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["name"] == name and m["description"] == "who leaves next month", m
    assert m["latest_version"] == 0 and m["aliases"] == [] and m["experiment"] is None, m
    assert m["log_sample_rate"] == 1, m
    assert m["created_by"] == modeler.id, m
    assert abs(as_int(m["created_at"]) - t0) < 60_000, m

    r = iapi.get_model(modeler.access, name)
    assert r.status_code == 200, r.text
    assert r.json() == m

    assert_problem(iapi.create_model(modeler.access, name), 409)
    for bad in ("", "Churn", "-churn", "_churn", ".churn", "churn model", "churn/1",
                "ch\u00fcrn", "a" * 64):
        assert_problem(iapi.create_model(modeler.access, bad), 400, field="name")
    # The edges of the pattern are allowed: 63 characters, digits first, . _ - inside.
    longest = ("0._-" + uuid.uuid4().hex + uuid.uuid4().hex)[:63]
    assert iapi.create_model(modeler.access, longest).status_code == 201
    assert iapi.create_model(modeler.access, unique_model_name("9a.b_c-d")).status_code == 201

    assert_problem(iapi.get_model(modeler.access, unique_model_name("nobody")), 404)


def test_models_are_listed_in_pages(iapi, modeler):
    names = {iapi.new_model(modeler.access, "listed") for _ in range(3)}
    seen, token, pages = set(), None, 0
    while True:
        r = iapi.list_models(modeler.access, limit=2, page_token=token)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["models"]) <= 2, body
        seen |= {m["name"] for m in body["models"]}
        token = body["next_page_token"]
        pages += 1
        if not token or names <= seen:
            break
        assert pages < 500, "paging does not end"
    assert names <= seen, names - seen


def test_versions_in_every_format_carry_what_xgboost_reads(iapi, modeler, models):
    trained = models.get("binary_named")
    name = iapi.new_model(modeler.access, "formats")
    t0 = time.time() * 1000
    v1 = iapi.upload(modeler.access, name, trained, "json", description="first")
    v2 = iapi.upload(modeler.access, name, trained, "ubj")
    v3 = iapi.upload(modeler.access, name, trained, "bin")
    assert_metadata(v1, trained, "json", name, 1)
    assert_metadata(v2, trained, "ubj", name, 2)
    assert_metadata(v3, trained, "bin", name, 3)
    assert v1["description"] == "first" and v2["description"] == "", (v1, v2)
    assert v1["created_by"] == modeler.id and abs(as_int(v1["created_at"]) - t0) < 60_000, v1
    # The names and types the JSON file carries, and the legacy binary cannot.
    assert v1["feature_names"] == ["age", "income", "score", "tenure"], v1
    assert v1["feature_types"] == ["q", "q", "int", "q"], v1
    assert v3["feature_names"] == [], v3

    assert version_numbers(iapi, modeler.access, name) == [3, 2, 1]
    m = iapi.get_model(modeler.access, name).json()
    assert m["latest_version"] == 3, m
    for v in (v1, v2, v3):
        again = iapi.get_version(modeler.access, name, v["version"])
        assert again.status_code == 200, again.text
        assert again.json() == v, "a version reads back differently from its upload answer"
    assert iapi.get_version(modeler.access, name, "latest").json() == v3
    assert_problem(iapi.get_version(modeler.access, name, 4), 404)
    assert_problem(iapi.get_version(modeler.access, unique_model_name("nobody"), 1), 404)


def test_every_model_kind_reads_back(iapi, modeler, models):
    name = iapi.new_model(modeler.access, "kinds")
    for i, spec in enumerate(("multi", "reg", "reg_named"), 1):
        trained = models.get(spec)
        assert_metadata(iapi.upload(modeler.access, name, trained, "ubj"), trained, "ubj", name, i)
    multi = iapi.get_version(modeler.access, name, 1).json()
    assert multi["objective"] == "multi:softprob" and multi["num_classes"] == 3, multi


def test_feature_names_can_be_given_at_upload(iapi, modeler, models):
    trained = models.get("binary")  # a file without names
    name = iapi.new_model(modeler.access, "named")
    v = iapi.upload(modeler.access, name, trained, "json", feature_names=["a", "b", "c", "d"])
    assert v["feature_names"] == ["a", "b", "c", "d"], v
    assert_problem(iapi.upload_version(modeler.access, name, trained.data("json"),
                                       feature_names=["a", "b", "c"]), 400, field="feature_names")
    assert version_numbers(iapi, modeler.access, name) == [1]


def test_aliases_move_and_protect_their_version(iapi, modeler, models):
    trained = models.get("binary")
    name = iapi.new_model(modeler.access, "aliases")
    for _ in range(3):
        iapi.upload(modeler.access, name, trained, "ubj")

    assert iapi.alias_ok(modeler.access, name, "production", 1) == {
        "model": name, "alias": "production", "version": 1, "previous_version": 0}
    assert iapi.get_version(modeler.access, name, "production").json()["version"] == 1
    assert iapi.get_version(modeler.access, name, 1).json()["aliases"] == ["production"]
    moved = iapi.alias_ok(modeler.access, name, "production", 2)
    assert moved["version"] == 2 and moved["previous_version"] == 1, moved
    assert iapi.alias_ok(modeler.access, name, "staging", 3)["previous_version"] == 0
    m = iapi.get_model(modeler.access, name).json()
    assert sorted((a["alias"], a["version"]) for a in m["aliases"]) == [
        ("production", 2), ("staging", 3)], m
    assert iapi.get_version(modeler.access, name, 1).json()["aliases"] == []
    assert iapi.get_version(modeler.access, name, "latest").json()["version"] == 3

    assert_problem(iapi.set_alias(modeler.access, name, "latest", 1), 400, field="alias")
    for bad in ("Production", "1st", "-x", "pro duction"):
        assert_problem(iapi.set_alias(modeler.access, name, bad, 1), 400, field="alias")
    assert_problem(iapi.set_alias(modeler.access, name, "canary", 9), 404)
    assert_problem(iapi.get_version(modeler.access, name, "canary"), 404)

    # An aliased version stays.
    assert_problem(iapi.delete_version(modeler.access, name, 2), 409)
    assert_problem(iapi.delete_version(modeler.access, name, 3), 409)
    assert version_numbers(iapi, modeler.access, name) == [3, 2, 1]
    # Once the alias has moved on, it can go, and its number is not given out again.
    iapi.alias_ok(modeler.access, name, "production", 3)
    r = iapi.delete_version(modeler.access, name, 2)
    assert r.status_code == 204, r.text
    assert_problem(iapi.get_version(modeler.access, name, 2), 404)
    assert_problem(iapi.delete_version(modeler.access, name, 2), 404)
    assert version_numbers(iapi, modeler.access, name) == [3, 1]
    assert iapi.upload(modeler.access, name, trained, "json")["version"] == 4

    r = iapi.delete_alias(modeler.access, name, "staging")
    assert r.status_code == 204, r.text
    assert_problem(iapi.get_version(modeler.access, name, "staging"), 404)
    assert_problem(iapi.delete_version(modeler.access, name, 3), 409)  # still production
    assert iapi.delete_version(modeler.access, name, 1).status_code == 204


def test_predict_picks_production_then_latest(iapi, modeler, models):
    a, b = models.get("binary"), models.get("binary_b")
    name = iapi.new_model(modeler.access, "choice")
    iapi.upload(modeler.access, name, a)
    iapi.upload(modeler.access, name, b)
    row = [a.X[0].tolist()]

    def served(**kw):
        body = iapi.predicted(modeler.access, name, row, **kw)
        assert body["variant"] == "default", body
        return body["model_version"]

    assert served() == 2  # latest
    iapi.alias_ok(modeler.access, name, "production", 1)
    assert served() == 1
    assert served(version=2) == 2
    assert served(alias="production") == 1
    iapi.alias_ok(modeler.access, name, "staging", 2)
    assert served(alias="staging") == 2
    assert iapi.delete_alias(modeler.access, name, "production").status_code == 204
    assert served() == 2
    assert_problem(iapi.predict(modeler.access, name, row, version=7), 404)
    assert_problem(iapi.predict(modeler.access, name, row, alias="production"), 404)


def test_model_settings_change(iapi, modeler):
    name = iapi.new_model(modeler.access, "settings", log_sample_rate=0.5)
    assert iapi.get_model(modeler.access, name).json()["log_sample_rate"] == 0.5
    r = iapi.update_model(modeler.access, name, description="now described")
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "now described" and r.json()["log_sample_rate"] == 0.5
    r = iapi.update_model(modeler.access, name, log_sample_rate=0.25)
    assert r.status_code == 200 and r.json()["log_sample_rate"] == 0.25, r.text
    assert r.json()["description"] == "now described"
    for bad in (-0.1, 1.5):
        assert_problem(iapi.update_model(modeler.access, name, log_sample_rate=bad), 400,
                       field="log_sample_rate")
    assert_problem(iapi.create_model(modeler.access, unique_model_name("x"), log_sample_rate=2),
                   400, field="log_sample_rate")
