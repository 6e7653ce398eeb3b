"""Fixtures for Cairn's system tests: real PostgreSQL, Redis, cairn-auth and
cairn-gateway processes on free ports.

  stack           (session) PostgreSQL + Redis from scripts/stack in a temporary folder
  key_file        (session) the Ed25519 PEM key cairn-auth signs with (tests forge with it)
  tokens          (session) cairn.Tokens over that key
  cluster         (session) the shared cairn.Cluster: one auth, one gateway (.url,
                  .gateway, .auths, each with ports, admin URLs, stop/kill/restart).
                  Tests that do not kill or reconfigure anything use this one.
  new_cluster     (function) factory: new_cluster(replicas=2, gateway_env={...}) starts a
                  private Cluster, stopped when the test ends. For tests that kill,
                  restart or reconfigure processes.
  api             (function) cairn.Api on the shared gateway
  user            (function) a freshly registered, logged-in cairn.User
  models          (session) xgbmodels.ModelSet: small XGBoost models trained on first
                  use with /usr/bin/python3's xgboost, with test rows and Python's
                  predictions
  inference_cluster (session) a second shared Cluster with one cairn-inference behind its
                  gateway, for the inference tests that do not restart anything;
                  new_cluster(inference=2, inference_env={...}) makes private ones
  iapi            (function) cairn.Api on the inference cluster's gateway
  modeler         (session) a user of the inference cluster (its role has models:read,
                  models:write and predict)
Everything started is stopped at the end even when tests fail; a test that fails gets the
tail of every process log in its report. The folder is removed after a green run and kept
(minus the database files) after a red one; CAIRN_TEST_DIR chooses where it goes.
The binaries come from $CAIRN_BIN_DIR (default build/bin).
"""

import atexit
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

import cairn
import xgbmodels


def _cleanup_all():
    for p in list(cairn.LIVE):
        try:
            p.stop(timeout=5)
        except Exception:
            pass


atexit.register(_cleanup_all)


def _on_sigterm(signum, frame):
    # Unwind like Ctrl-C, so fixtures stop every process and the stack.
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _on_sigterm)

_kept = []


def pytest_terminal_summary(terminalreporter):
    for d in _kept:
        terminalreporter.write_line(f"process logs of this run are kept in {d}/logs")


@pytest.fixture(scope="session")
def work_dir(request):
    base = os.environ.get("CAIRN_TEST_DIR")
    if base:
        os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix="cairn-test-", dir=base or None)
    # When root, Postgres runs as the postgres user, which must reach this folder.
    os.chmod(d, 0o755)
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    yield d
    # Binaries built with ASan/UBSan (make asan; CAIRN_BIN_DIR=build-asan/bin) report to
    # their log and carry on or abort; either way the run must fail and say where.
    reports = []
    logs = os.path.join(d, "logs")
    for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
        with open(os.path.join(logs, name), "rb") as f:
            text = f.read().decode("utf-8", "replace")
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
            i = text.find(marker)
            if i >= 0:
                reports.append(f"{name}: {text[max(0, i - 200):i + 1500]}")
                break
    if reports:
        request.session.testsfailed += 1
    if request.session.testsfailed:
        shutil.rmtree(os.path.join(os.path.realpath(os.path.join(d, "pg")), "data"),
                      ignore_errors=True)
        _kept.append(d)
    else:
        pg = os.path.join(d, "pg")
        if os.path.islink(pg):
            shutil.rmtree(os.path.realpath(pg), ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)
    if reports:
        pytest.fail("sanitizer reports in process logs:\n" + "\n\n".join(reports), pytrace=False)


@pytest.fixture(scope="session")
def stack(work_dir):
    s = cairn.Stack(work_dir).start()
    try:
        yield s
    finally:
        _cleanup_all()
        s.stop()


@pytest.fixture(scope="session")
def key_file(work_dir):
    path = os.path.join(work_dir, "auth_key.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", path],
                   check=True, capture_output=True)
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="session")
def tokens(key_file):
    return cairn.Tokens(key_file)


@pytest.fixture(scope="session")
def log_dir(work_dir):
    return os.path.join(work_dir, "logs")


@pytest.fixture(scope="session")
def cluster(stack, key_file, log_dir):
    c = cairn.Cluster(stack, key_file, log_dir).start()
    yield c
    c.stop()


@pytest.fixture
def new_cluster(stack, key_file, log_dir):
    started = []

    def make(replicas=1, auth_env=None, gateway_env=None, inference=0, inference_env=None):
        c = cairn.Cluster(stack, key_file, log_dir, replicas=replicas,
                          auth_env=auth_env, gateway_env=gateway_env,
                          inference=inference, inference_env=inference_env)
        started.append(c)
        return c.start()

    yield make
    for c in started:
        c.stop()


@pytest.fixture
def api(cluster):
    return cluster.api()


@pytest.fixture
def user(api):
    return api.new_user()


@pytest.fixture(scope="session")
def models(work_dir):
    return xgbmodels.ModelSet(os.path.join(work_dir, "models"))


@pytest.fixture(scope="session")
def inference_cluster(stack, key_file, log_dir):
    # Access tokens for an hour: `modeler` signs in once for the whole session.
    c = cairn.Cluster(stack, key_file, log_dir, inference=1,
                      auth_env={"CAIRN_AUTH_ACCESS_TTL_S": "3600"}).start()
    yield c
    c.stop()


@pytest.fixture
def iapi(inference_cluster):
    return inference_cluster.api()


@pytest.fixture(scope="session")
def modeler(inference_cluster):
    return inference_cluster.api().new_user("modeler")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and cairn.LIVE:
        for p in cairn.LIVE:
            rep.sections.append((f"log of {p.name} (last 30 lines)", p.log_tail(30)))
