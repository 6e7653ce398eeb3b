"""Hostile model files: truncated, random bytes, JSON that is not a model, nesting that
would blow a recursive parser's stack, an empty body, a file over the 32 MiB cap, a model
claiming absurd or merely too many (10 000) features. Each is a 4xx, the service stays
up (same process, /healthz answers), nothing is stored, and the next good upload still
gets the next version number."""

import json
import random

import pytest

from cairn import assert_problem

MAX_MODEL_BYTES = 32 << 20


def doctored(trained, **learner_model_param):
    """The JSON model file of trained with learner_model_param fields replaced."""
    doc = json.loads(trained.data("json"))
    doc["learner"]["learner_model_param"].update(learner_model_param)
    return json.dumps(doc).encode()


def hostile_files(models):
    good = models.get("binary")
    rnd = random.Random(215)
    js, ubj, binary = good.data("json"), good.data("ubj"), good.data("bin")
    return {
        "truncated json": js[: len(js) // 2],
        "truncated ubjson": ubj[: len(ubj) // 2],
        "truncated binary": binary[: len(binary) // 2],
        "json minus its last byte": js[:-1],
        "random bytes": bytes(rnd.getrandbits(8) for _ in range(65536)),
        "random after a ubjson start": ubj[:64] + bytes(rnd.getrandbits(8) for _ in range(4096)),
        "json that is not a model": b'{"hello": "world", "learner": 5}',
        "a json array": b"[1, 2, 3]",
        "an empty learner": b'{"learner": {}, "version": [1, 7, 4]}',
        "deep nesting": b"[" * 200_000 + b"]" * 200_000,
        "deep objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "negative features": doctored(good, num_feature="-4"),
        "absurd features": doctored(good, num_feature="2000000000"),
        "absurd classes": doctored(good, num_class="1000000000"),
        "10 000 features": models.get("wide").data("json"),
        "10 000 features, ubjson": models.get("wide").data("ubj"),
        "empty body": b"",
    }


@pytest.fixture
def target(inference_cluster, modeler, models):
    """A model with one good version."""
    api = inference_cluster.api()
    name = api.new_model(modeler.access, "hostile")
    api.upload(modeler.access, name, models.get("binary"))
    return name


def stored_versions(stack, name):
    return int(stack.sql("SELECT count(*) FROM inference.versions v JOIN inference.models m "
                         "ON m.id = v.model_id WHERE m.name = :'v1'", name)[0][0])


def assert_nothing_happened(iapi, modeler, inference_cluster, stack, name, pid):
    inf = inference_cluster.inference
    assert inf.pid == pid and inf.healthy(), f"the service died:\n{inf.log_tail()}"
    assert stored_versions(stack, name) == 1
    r = iapi.list_versions(modeler.access, name)
    assert [v["version"] for v in r.json()["versions"]] == [1], r.text
    assert iapi.get_model(modeler.access, name).json()["latest_version"] == 1


def test_hostile_files_are_refused(iapi, modeler, models, inference_cluster, stack, target):
    pid = inference_cluster.inference.pid
    failures = []
    for what, data in hostile_files(models).items():
        # The type is only a label (the format is detected from the bytes): give JSON's
        # to what starts like JSON, as a client would.
        ctype = "application/json" if data[:1] in (b"{", b"[") else "application/octet-stream"
        r = iapi.upload_version(modeler.access, target, data, content_type=ctype)
        if r.status_code != 400 or not r.headers.get("Content-Type", "").startswith(
                "application/problem+json"):
            failures.append(f"{what}: {r.status_code} {r.text[:200]}")
        assert_nothing_happened(iapi, modeler, inference_cluster, stack, target, pid)
    assert not failures, "not refused with 400 problem+json:\n" + "\n".join(failures)
    # Nothing was used up: the next good file is version 2, and it serves.
    good = models.get("binary")
    assert iapi.upload(modeler.access, target, good, "json")["version"] == 2
    body = iapi.predicted(modeler.access, target, [good.X[0].tolist()], version=2)
    assert abs(body["predictions"][0] - float(good.pred[0])) <= 1e-6, body


def test_oversize_file_is_413(iapi, modeler, inference_cluster, stack, target):
    pid = inference_cluster.inference.pid
    big = b"{" + b" " * MAX_MODEL_BYTES + b"}"
    r = iapi.upload_version(modeler.access, target, big, content_type="application/json")
    assert_problem(r, 413)
    assert_nothing_happened(iapi, modeler, inference_cluster, stack, target, pid)
