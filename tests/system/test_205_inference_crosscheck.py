"""Predictions through the gateway equal python3-xgboost's on the same model file, to
1e-6: binary:logistic, multi:softprob (3 classes) and reg:squarederror, with and without
feature names; through Cairn's predict (rows, rows of {feature: value}, null as missing)
and the Open Inference Protocol v2 (one [N, F] tensor with flat or nested data, any
numeric datatype, or one tensor per feature, in JSON or as binary tensor data), whose
metadata routes describe the model."""

import json
import uuid

import numpy as np

import pytest

from cairn import assert_close
from xgbmodels import rows

SPECS = ["binary", "binary_named", "multi", "multi_named", "reg", "reg_named"]
NAMED = [s for s in SPECS if s.endswith("_named")]


class Served:
    def __init__(self, name, trained):
        self.name = name
        self.t = trained


@pytest.fixture(scope="module")
def served(inference_cluster, modeler, models):
    """Every spec uploaded once (JSON file) as version 1 of its own model; binary_named
    also as versions 2 (UBJSON) and 3 (legacy binary)."""
    api = inference_cluster.api()
    out = {}
    for spec in SPECS:
        t = models.get(spec)
        name = api.new_model(modeler.access, spec.replace("_", "-"))
        api.upload(modeler.access, name, t, "json")
        out[spec] = Served(name, t)
    for fmt in ("ubj", "bin"):
        api.upload(modeler.access, out["binary_named"].name, out["binary_named"].t, fmt)
    # Calls without a version get version 1 (the JSON file, with names) until
    # test_v2_version_may_be_an_alias moves the alias.
    api.alias_ok(modeler.access, out["binary_named"].name, "production", 1)
    return out


def as_dicts(trained, A):
    """Rows as {feature: value} objects, keys in reverse order, NaN as null."""
    out = []
    for r in rows(A):
        out.append({n: v for n, v in reversed(list(zip(trained.feature_names, r)))})
    return out


def flat(A):
    return [v for r in rows(A) for v in r]


def tensor(A, datatype="FP32", nested=False, name="input-0"):
    data = rows(A) if nested else flat(A)
    if datatype.startswith(("INT", "UINT")):
        data = [[int(v) for v in r] for r in data] if nested else [int(v) for v in data]
    return {"name": name, "shape": list(A.shape), "datatype": datatype, "data": data}


def assert_outputs(body, s, want, version="1", rid=None):
    n = len(want)
    assert body["model_name"] == s.name, body
    assert body["model_version"] == version, body
    if rid is not None:
        assert body["id"] == rid, body
    outs = body["outputs"]
    assert len(outs) == 1, outs
    out = outs[0]
    assert out["name"] == "predict" and out["datatype"] == "FP32", out
    assert out["shape"] == ([n, s.t.num_classes] if s.t.num_classes else [n]), out
    assert_close(out["data"], want.reshape(-1), what="outputs[0].data")


def infer_ok(iapi, auth, s, inputs, version=None, rid=None):
    body = {"inputs": inputs}
    if rid is not None:
        body["id"] = rid
    r = iapi.infer(auth, s.name, body, version=version)
    assert r.status_code == 200, f"infer: {r.status_code} {r.text[:500]}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    return r.json()


@pytest.mark.parametrize("spec", SPECS)
def test_v1_rows_match_python(iapi, modeler, served, spec):
    s = served[spec]
    rid = f"xcheck-{uuid.uuid4().hex}"
    r = iapi.predict(modeler.access, s.name, rows(s.t.X), version=1,
                     headers={"X-Request-Id": rid})
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert_close(body["predictions"], s.t.pred)
    assert body["model"] == s.name and body["model_version"] == 1, body
    assert body["variant"] == "default", body
    assert body["request_id"] == rid == r.headers.get("X-Request-Id"), (body, r.headers)
    # Without a request id of its own, the client gets the gateway's, in both places.
    r = iapi.predict(modeler.access, s.name, rows(s.t.X[:1]))
    assert r.status_code == 200 and r.json()["request_id"] == r.headers["X-Request-Id"], r.text


@pytest.mark.parametrize("spec", SPECS)
def test_v1_missing_values_match_python(iapi, modeler, served, spec):
    s = served[spec]
    assert any(v is None for r in rows(s.t.Xm) for v in r)
    body = iapi.predicted(modeler.access, s.name, rows(s.t.Xm))
    assert_close(body["predictions"], s.t.pred_m)


@pytest.mark.parametrize("spec", NAMED)
def test_v1_rows_by_feature_name_match_python(iapi, modeler, served, spec):
    s = served[spec]
    # Version 1 is the JSON file, which carries the names (binary_named's version 3, the
    # legacy binary format, has none).
    body = iapi.predicted(modeler.access, s.name, as_dicts(s.t, s.t.X), version=1)
    assert_close(body["predictions"], s.t.pred)
    body = iapi.predicted(modeler.access, s.name, as_dicts(s.t, s.t.Xm), version=1)
    assert_close(body["predictions"], s.t.pred_m)


def test_every_upload_format_predicts_alike(iapi, modeler, served):
    s = served["binary_named"]
    for version in (1, 2, 3):
        body = iapi.predicted(modeler.access, s.name, rows(s.t.Xm), version=version)
        assert body["model_version"] == version, body
        assert_close(body["predictions"], s.t.pred_m, what=f"version {version}")


@pytest.mark.parametrize("spec", SPECS)
def test_v2_one_tensor_flat_and_nested(iapi, modeler, served, spec):
    s = served[spec]
    for nested in (False, True):
        rid = f"infer-{uuid.uuid4().hex[:8]}"
        body = infer_ok(iapi, modeler.access, s, [tensor(s.t.X, nested=nested)], rid=rid)
        assert_outputs(body, s, s.t.pred, rid=rid)
    body = infer_ok(iapi, modeler.access, s, [tensor(s.t.X, nested=True)], version="1")
    assert_outputs(body, s, s.t.pred)


@pytest.mark.parametrize("datatype", ["FP64", "INT8", "INT16", "INT32", "INT64"])
def test_v2_datatypes(iapi, modeler, served, datatype):
    s = served["multi"]
    A, want = (s.t.X, s.t.pred) if datatype == "FP64" else (s.t.Xi, s.t.pred_i)
    body = infer_ok(iapi, modeler.access, s, [tensor(A, datatype)])
    assert_outputs(body, s, want)


def test_v2_one_row_of_shape_f(iapi, modeler, served):
    s = served["multi"]
    t = {"name": "input-0", "shape": [s.t.num_features], "datatype": "FP32",
         "data": rows(s.t.X[:1])[0]}
    assert_outputs(infer_ok(iapi, modeler.access, s, [t]), s, s.t.pred[:1])


@pytest.mark.parametrize("spec", NAMED)
def test_v2_one_tensor_per_feature(iapi, modeler, served, spec):
    s = served[spec]
    cols = [(n, s.t.X[:, i]) for i, n in enumerate(s.t.feature_names)]
    inputs = []
    for i, (n, col) in enumerate(reversed(cols)):
        shape = [len(col), 1] if i % 2 else [len(col)]
        inputs.append({"name": n, "shape": shape, "datatype": "FP32",
                       "data": [float(v) for v in col]})
    assert_outputs(infer_ok(iapi, modeler.access, s, inputs), s, s.t.pred)


def binary_request(tensors):
    """An infer body with binary tensor data (Triton's and KServe's extension): the JSON
    part, then each (name, array, datatype) tensor's values little-endian, back to back;
    returns (body, the Inference-Header-Content-Length value)."""
    inputs, data = [], b""
    for name, A, datatype in tensors:
        raw = np.ascontiguousarray(A, dtype=np.dtype(DTYPES[datatype]).newbyteorder("<")).tobytes()
        inputs.append({"name": name, "shape": list(A.shape), "datatype": datatype,
                       "parameters": {"binary_data_size": len(raw)}})
        data += raw
    header = json.dumps({"inputs": inputs}).encode()
    return header + data, str(len(header))


DTYPES = {"FP32": "f4", "FP64": "f8", "INT8": "i1", "INT16": "i2", "INT32": "i4", "INT64": "i8",
          "UINT8": "u1", "UINT16": "u2", "UINT32": "u4", "UINT64": "u8", "BOOL": "u1"}


@pytest.mark.parametrize("spec", SPECS)
def test_v2_binary_tensor_matches_python(iapi, modeler, served, spec):
    s = served[spec]
    for A, want in ((s.t.X, s.t.pred), (s.t.Xm, s.t.pred_m)):  # NaN is a missing value
        body, hlen = binary_request([("input-0", A, "FP32")])
        r = iapi.infer(modeler.access, s.name, body,
                       headers={"Inference-Header-Content-Length": hlen,
                                "Content-Type": "application/octet-stream"})
        assert r.status_code == 200, f"infer: {r.status_code} {r.text[:500]}"
        assert_outputs(r.json(), s, want)


def binary_response(r):
    """(JSON part, the output's values) of an answer with binary tensor data out."""
    assert r.status_code == 200, f"infer: {r.status_code} {r.text[:500]}"
    assert r.headers["Content-Type"] == "application/octet-stream", r.headers
    hlen = int(r.headers["Inference-Header-Content-Length"])
    body = json.loads(r.content[:hlen])
    out = body["outputs"][0]
    assert "data" not in out, out
    assert out["parameters"]["binary_data_size"] == len(r.content) - hlen, (out, len(r.content), hlen)
    return body, np.frombuffer(r.content[hlen:], dtype="<f4")


@pytest.mark.parametrize("spec", ["binary", "multi_named"])
def test_v2_binary_output_matches_python(iapi, modeler, served, spec):
    """Binary tensor data out, asked per output or for the request, from JSON or binary
    inputs: the same predictions as Python's XGBoost, and the JSON part's shape."""
    s = served[spec]
    per_output = {"outputs": [{"name": "predict", "parameters": {"binary_data": True}}]}
    for_request = {"parameters": {"binary_data_output": True}}
    for ask in (per_output, for_request):
        r = iapi.infer(modeler.access, s.name, {"id": "b1", "inputs": [tensor(s.t.X)], **ask})
        body, data = binary_response(r)
        assert body["id"] == "b1" and body["model_name"] == s.name, body
        shape = [len(s.t.X), s.t.num_classes] if s.t.num_classes else [len(s.t.X)]
        assert body["outputs"][0]["shape"] == shape, body
        assert_close(data.tolist(), s.t.pred.reshape(-1), what="binary output")
    body, hlen = binary_request([("input-0", s.t.Xm, "FP32")])
    head = json.loads(body[:int(hlen)])
    head.update(for_request)
    j = json.dumps(head).encode()
    r = iapi.infer(modeler.access, s.name, j + body[int(hlen):],
                   headers={"Inference-Header-Content-Length": str(len(j)),
                            "Content-Type": "application/octet-stream"})
    _, data = binary_response(r)
    assert_close(data.tolist(), s.t.pred_m.reshape(-1), what="binary in, binary out")
    # The output's own word wins over the request's; a non-bool is refused.
    r = iapi.infer(modeler.access, s.name, {"inputs": [tensor(s.t.X)], **for_request,
                                            "outputs": [{"name": "predict", "parameters": {"binary_data": False}}]})
    assert r.status_code == 200 and "Inference-Header-Content-Length" not in r.headers, r.headers
    assert_outputs(r.json(), s, s.t.pred)
    r = iapi.infer(modeler.access, s.name, {"inputs": [tensor(s.t.X)], "parameters": {"binary_data_output": "yes"}})
    assert r.status_code == 400, r.text[:300]
    assert "parameters.binary_data_output: expected true or false" in r.json()["error"], r.text[:300]


@pytest.mark.parametrize("datatype", ["FP64", "INT16", "INT32"])
def test_v2_binary_datatypes_and_tensor_per_feature(iapi, modeler, served, datatype):
    s = served["multi_named"]
    A, want = (s.t.X, s.t.pred) if datatype == "FP64" else (s.t.Xi, s.t.pred_i)
    body, hlen = binary_request([(n, A[:, i], datatype) for i, n in enumerate(s.t.feature_names)])
    r = iapi.infer(modeler.access, s.name, body, headers={"Inference-Header-Content-Length": hlen})
    assert r.status_code == 200, f"infer: {r.status_code} {r.text[:500]}"
    assert_outputs(r.json(), s, want)


def test_v2_binary_tensor_refusals(iapi, modeler, served):
    s = served["binary"]
    body, hlen = binary_request([("input-0", s.t.X, "FP32")])
    cases = [
        # (body, header, words of the error)
        (body, str(len(body) + 1), "Inference-Header-Content-Length: %d is more than" % (len(body) + 1)),
        (body, "twelve", "Inference-Header-Content-Length: expected the length of the JSON part"),
        (body + b"\0", hlen, "inputs: the body has"),
        (body[:-4], hlen, "only"),
        (body, None, "invalid JSON"),  # without the header the whole body is JSON
    ]
    for data, header, words in cases:
        h = {"Inference-Header-Content-Length": header} if header is not None else {}
        r = iapi.infer(modeler.access, s.name, data, headers=h)
        assert r.status_code == 400, (words, r.status_code, r.text[:300])
        assert words in r.json()["error"], (words, r.text[:300])
    bad = s.t.X.copy()
    bad[3, 1] = np.inf
    body, hlen = binary_request([("input-0", bad, "FP32")])
    r = iapi.infer(modeler.access, s.name, body, headers={"Inference-Header-Content-Length": hlen})
    assert r.status_code == 400 and "row 3, column 1: infinite" in r.json()["error"], r.text[:300]
    # Still serving, and the server says it speaks the extension.
    body, hlen = binary_request([("input-0", s.t.X, "FP32")])
    r = iapi.infer(modeler.access, s.name, body, headers={"Inference-Header-Content-Length": hlen})
    assert r.status_code == 200, r.text[:300]
    assert "binary_tensor_data" in iapi.v2_get(modeler.access, "/v2").json()["extensions"]


def test_v2_version_may_be_an_alias(iapi, modeler, served):
    s = served["binary_named"]
    iapi.alias_ok(modeler.access, s.name, "production", 2)
    body = infer_ok(iapi, modeler.access, s, [tensor(s.t.X)], version="production")
    assert_outputs(body, s, s.t.pred, version="2")
    body = infer_ok(iapi, modeler.access, s, [tensor(s.t.X)])  # production by default
    assert_outputs(body, s, s.t.pred, version="2")
    body = infer_ok(iapi, modeler.access, s, [tensor(s.t.X)], version="latest")
    assert_outputs(body, s, s.t.pred, version="3")


@pytest.mark.parametrize("spec", ["binary_named", "multi", "reg"])
def test_v2_model_metadata(iapi, modeler, served, spec):
    s = served[spec]
    versions = ["1", "2", "3"] if spec == "binary_named" else ["1"]
    want = {
        "name": s.name,
        "versions": versions,
        "platform": "xgboost",
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, s.t.num_features]}],
        "outputs": [{"name": "predict", "datatype": "FP32",
                     "shape": [-1, s.t.num_classes] if s.t.num_classes else [-1]}],
    }
    for path in (iapi.v2_path(s.name), iapi.v2_path(s.name, "1")):
        r = iapi.v2_get(modeler.access, path)
        assert r.status_code == 200, (path, r.text)
        body = r.json()
        for k, v in want.items():
            if k == "versions":
                assert sorted(body[k], key=int) == v, (path, body)
            else:
                assert body[k] == v, (path, k, body)
        r = iapi.v2_get(modeler.access, path + "/ready")
        assert r.status_code == 200, (path, r.text)
        assert r.json()["name"] == s.name and r.json()["ready"] is True, r.json()
