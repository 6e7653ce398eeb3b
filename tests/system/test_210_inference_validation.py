"""Input to predict is checked before XGBoost sees it: a wrong row width, a string, a
nested array, a number float32 cannot hold, an unknown feature name, too many rows or a
body that is not JSON is a 400 naming the row and column (problem+json on /v1, a bare
{"error"} on /v2); an unknown model or version is 404. The three public Open Inference
Protocol routes answer without credentials, everything else needs the right scope."""

import json

import pytest

from cairn import INFERENCE_MAX_ROWS, assert_problem, assert_v2_error, unique_model_name

NAMES = ["age", "income", "score", "tenure"]


@pytest.fixture(scope="module")
def named(inference_cluster, modeler, models):
    api = inference_cluster.api()
    name = api.new_model(modeler.access, "valid-named")
    api.upload(modeler.access, name, models.get("binary_named"))
    return name


@pytest.fixture(scope="module")
def unnamed(inference_cluster, modeler, models):
    api = inference_cluster.api()
    name = api.new_model(modeler.access, "valid-plain")
    api.upload(modeler.access, name, models.get("binary"))
    return name


def refused(r, field):
    """A 400 problem whose errors name field exactly."""
    return assert_problem(r, 400, field=field)


def refused_like(r, prefix, *parts):
    """A 400 problem with an error whose field starts with prefix and mentions parts (the
    notation of a key inside a row is the service's choice: .key or ["key"])."""
    body = assert_problem(r, 400)
    fields = [e["field"] for e in body["errors"]]
    assert any(f.startswith(prefix) and all(p in f for p in parts) for f in fields), body
    return body


@pytest.mark.parametrize("instances, field", [
    ([[1, 2, 3, 4], [1, 2, 3]], "instances[1]"),
    ([[1, 2, 3, 4, 5]], "instances[0]"),
    ([[]], "instances[0]"),
    ([[1, 2, 3, 4], [1, "x", 3, 4]], "instances[1][1]"),
    ([[1, 2, [3], 4]], "instances[0][2]"),
    ([[1, 2, 3, {"a": 1}]], "instances[0][3]"),
    ([[1, 2, 1e39, 4]], "instances[0][2]"),      # no float32 holds it: it would be inf
    ([[1, 2, 3, -1e39]], "instances[0][3]"),
    ([[1, 2, 3, 4], 5], "instances[1]"),
    ([], "instances"),
    ("1,2,3,4", "instances"),
])
def test_bad_rows_name_the_cell(iapi, modeler, unnamed, instances, field):
    refused(iapi.predict(modeler.access, unnamed, instances), field)


def test_missing_instances_and_bad_version(iapi, modeler, unnamed):
    refused(iapi.predict(modeler.access, unnamed, body=json.dumps({"rows": [[1, 2, 3, 4]]})),
            "rows")  # an unknown key is named first: the likely typo
    refused(iapi.predict(modeler.access, unnamed, body=json.dumps({"version": 1})), "instances")
    refused(iapi.predict(modeler.access, unnamed, [[1, 2, 3, 4]], version="one"), "version")


@pytest.mark.parametrize("body", [b"", b"not json", b"[[1,2,3,4]]", b'{"instances": [[1,2,3,4]]',
                                  b'{"instances": [[1,2,NaN,4]]}', b"\xff\xfe{}"])
def test_bodies_that_are_not_a_predict_document(iapi, modeler, unnamed, body):
    assert_problem(iapi.predict(modeler.access, unnamed, body=body), 400)


def test_too_many_rows(iapi, modeler, unnamed):
    many = [[0.5, 0.5, 0.5, 0.5]] * (INFERENCE_MAX_ROWS + 1)
    refused(iapi.predict(modeler.access, unnamed, many), "instances")
    body = iapi.predicted(modeler.access, unnamed, many[:INFERENCE_MAX_ROWS])
    assert len(body["predictions"]) == INFERENCE_MAX_ROWS


def test_rows_by_name_are_checked(iapi, modeler, named, unnamed):
    good = dict(zip(NAMES, [0.1, 0.2, 3, 0.4]))
    assert len(iapi.predicted(modeler.access, named, [good, good])["predictions"]) == 2
    refused_like(iapi.predict(modeler.access, named, [good, {**good, "bogus": 1}]),
                 "instances[1]", "bogus")
    refused_like(iapi.predict(modeler.access, named, [{**good, "income": "much"}]),
                 "instances[0]", "income")
    refused_like(iapi.predict(modeler.access, named, [{**good, "age": [1]}]),
                 "instances[0]", "age")
    # A model without feature names has no names to look rows up by.
    refused_like(iapi.predict(modeler.access, unnamed, [good]), "instances[0]")


def test_unknown_model_or_version(iapi, modeler, unnamed):
    row = [[1, 2, 3, 4]]
    assert_problem(iapi.predict(modeler.access, unique_model_name("nobody"), row), 404)
    assert_problem(iapi.predict(modeler.access, unnamed, row, version=2), 404)
    assert_problem(iapi.predict(modeler.access, unnamed, row, alias="production"), 404)
    empty = iapi.new_model(modeler.access, "empty")
    assert_problem(iapi.predict(modeler.access, empty, row), 404)


def v2_tensor(shape, data, datatype="FP32", name="input-0"):
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


@pytest.mark.parametrize("body", [
    v2_tensor([2, 4], [1, 2, 3, 4, 5, 6, 7]),          # data shorter than the shape
    v2_tensor([1, 4], [1, 2, 3, 4, 5]),                # longer
    v2_tensor([1, 3], [1, 2, 3]),                      # wrong row width
    v2_tensor([1, 2, 2], [1, 2, 3, 4]),                # rank 3
    v2_tensor([1, 4], [1, 2, "x", 4]),
    v2_tensor([1, 4], [[1, 2], [3, 4]]),               # nesting that is not the shape
    v2_tensor([1, 4], [1, 2, 3, 4], datatype="FP16"),
    v2_tensor([1, 4], ["a", "b", "c", "d"], datatype="BYTES"),
    v2_tensor([1, 4], [1, 2, 300, 4], datatype="INT8"),
    v2_tensor([1, 4], [1, 2, -1, 4], datatype="UINT32"),
    v2_tensor([1, 4], [1, 2, 1.5, 4], datatype="INT32"),
    v2_tensor([-1, 4], [1, 2, 3, 4]),
    {"inputs": []},
    {"outputs": []},
    b"not json",
    b"",
])
def test_v2_bad_infer_is_400(iapi, modeler, unnamed, body):
    assert_v2_error(iapi.infer(modeler.access, unnamed, body), 400)


def test_v2_per_feature_tensors_are_checked(iapi, modeler, named):
    def col(n, v=0.5):
        return {"name": n, "shape": [1], "datatype": "FP32", "data": [v]}

    ok = {"inputs": [col(n) for n in NAMES]}
    assert iapi.infer(modeler.access, named, ok).status_code == 200
    for body in ({"inputs": [col(n) for n in NAMES[:3]]},                  # one missing
                 {"inputs": [col(n) for n in NAMES] + [col("bogus")]},     # one unknown
                 {"inputs": [col(n) for n in NAMES] + [col("age")]},       # one twice
                 {"inputs": [col(n) for n in NAMES[:3]] +
                  [{"name": "tenure", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}):
        assert_v2_error(iapi.infer(modeler.access, named, body), 400)


def test_v2_unknown_model_or_version_is_404(iapi, modeler, unnamed):
    nobody = unique_model_name("nobody")
    body = v2_tensor([1, 4], [1, 2, 3, 4])
    for model, version in ((nobody, None), (unnamed, "7"), (unnamed, "production"),
                           (nobody, "1")):
        assert_v2_error(iapi.infer(modeler.access, model, body, version=version), 404)
        assert_v2_error(iapi.v2_get(modeler.access, iapi.v2_path(model, version)), 404)
        assert_v2_error(iapi.v2_get(modeler.access, iapi.v2_path(model, version, "/ready")), 404)


def test_v2_public_routes_need_no_credentials(iapi, unnamed):
    r = iapi.get("/v2")
    assert r.status_code == 200, r.text
    meta = r.json()
    assert meta["name"] == "cairn-inference", meta
    assert isinstance(meta["version"], str) and meta["version"], meta
    assert meta["extensions"] == ["binary_tensor_data"], meta
    r = iapi.get("/v2/health/live")
    assert r.status_code == 200 and r.json() == {"live": True}, r.text
    r = iapi.get("/v2/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}, r.text
    # ... and only those.
    assert iapi.get(iapi.v2_path(unnamed)).status_code == 401
    assert iapi.get(iapi.v2_path(unnamed, "1", "/ready")).status_code == 401
    assert iapi.infer(None, unnamed, v2_tensor([1, 4], [1, 2, 3, 4])).status_code == 401
    assert_problem(iapi.predict(None, unnamed, [[1, 2, 3, 4]]), 401)
    assert_problem(iapi.get_model(None, unnamed), 401)


def test_scopes(iapi, modeler, models, unnamed):
    reader = iapi.new_key(modeler.access, "reader", scopes=["models:read"])["secret"]
    predictor = iapi.new_key(modeler.access, "predictor", scopes=["predict"])["secret"]
    writer = iapi.new_key(modeler.access, "writer", scopes=["models:write"])["secret"]
    row = [[1, 2, 3, 4]]
    infer = v2_tensor([1, 4], [1, 2, 3, 4])

    assert iapi.get_model(reader, unnamed).status_code == 200
    assert iapi.list_versions(reader, unnamed).status_code == 200
    assert_problem(iapi.predict(reader, unnamed, row), 403)
    assert iapi.infer(reader, unnamed, infer).status_code == 403
    assert iapi.v2_get(reader, iapi.v2_path(unnamed)).status_code == 403
    assert_problem(iapi.create_model(reader, unique_model_name("ro")), 403)
    assert_problem(iapi.upload_version(reader, unnamed, models.get("binary").data()), 403)
    assert_problem(iapi.set_alias(reader, unnamed, "production", 1), 403)

    assert iapi.predict(predictor, unnamed, row).status_code == 200
    assert iapi.infer(predictor, unnamed, infer).status_code == 200
    assert iapi.v2_get(predictor, iapi.v2_path(unnamed, "1", "/ready")).status_code == 200
    assert_problem(iapi.get_model(predictor, unnamed), 403)

    assert iapi.create_model(writer, unique_model_name("rw")).status_code == 201
    assert_problem(iapi.predict(writer, unnamed, row), 403)
