"""Helpers for Cairn's system tests: real processes on free ports, an HTTP client, token
forging and Prometheus parsing.

The pieces, bottom up:
  free_port()          a free TCP port below the kernel's ephemeral range
  Stack                PostgreSQL + Redis from scripts/stack in a folder
  Proc                 one Cairn binary with its env and log; stop/kill/restart
  Auth, Gateway        Proc with their ports, URLs and /metrics; each auth publishes
                       revocations on its own events port, the gateway subscribes to all
  Inference            cairn-inference with its RPC and admin ports
  Cluster              N auth replicas (+ M inference replicas) + one gateway, started
                       ready and stopped together
  Api                  a requests session with the auth, API-key, admin and model calls
                       as methods; Api.admin() signs in the bootstrap admin (ADMIN_EMAIL);
                       Api.new_model()/upload() are the asserting shortcuts of the model
                       tests
  parallel()           runs calls on several threads, one HTTP session each
  Tokens               decodes real access tokens and re-signs altered copies
  api_key()            builds API keys of the lib/apikey.h format (for forged ones)
  metric_sum()         sums Prometheus samples by name and labels
  assert_problem()     checks an application/problem+json error
  assert_v2_error()    checks an Open Inference Protocol {"error": "..."} answer
To add a service to the harness: a Proc subclass with its env (like Auth), and a slot in
Cluster.start.
"""

import base64
import concurrent.futures
import ctypes
import json
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
import zlib

import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN_DIR = os.environ.get("CAIRN_BIN_DIR", os.path.join(ROOT, "build", "bin"))
STACK = os.path.join(ROOT, "scripts", "stack")

SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

# Every process the harness started and has not yet seen exit, so teardown and the
# failure report can reach them all.
LIVE = []

_handed_out = set()


def free_port():
    """Returns a TCP port free on 127.0.0.1 now and not handed out before in this run.
    Chosen below 32768 so the kernel never gives it to an outgoing connection."""
    for _ in range(1000):
        port = random.randint(20000, 32000)
        if port in _handed_out:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port")


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL if the test runner dies, so even a killed pytest
    leaves no Cairn process behind."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setsid()


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Calls pred() until it returns a true value (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # the thing we wait for may refuse connections meanwhile
            last_exc = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met in {timeout}s" +
                               (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def http_ok(url, timeout=1.0):
    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


class Stack:
    """PostgreSQL and Redis in folder `root`, started by scripts/stack on free ports."""

    def __init__(self, root):
        self.root = root
        self.pg_dsn = None
        self.redis_addr = None
        self.pg_port = None
        self.redis_port = None

    def start(self):
        last = None
        for _ in range(3):
            env = dict(os.environ, CAIRN_PG_PORT=str(free_port()),
                       CAIRN_REDIS_PORT=str(free_port()))
            r = subprocess.run([STACK, "start", self.root], env=env,
                               capture_output=True, text=True, timeout=180)
            if r.returncode == 0:
                self._read_env()
                return self
            last = r.stderr
        raise RuntimeError(f"scripts/stack start failed:\n{last}")

    def _read_env(self):
        with open(os.path.join(self.root, "env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                v = v.strip("'")
                if k == "CAIRN_PG_DSN":
                    self.pg_dsn = v
                    self.pg_port = int(re.search(r"port=(\d+)", v).group(1))
                elif k == "CAIRN_REDIS_ADDR":
                    self.redis_addr = v
                    self.redis_port = int(v.rsplit(":", 1)[1])

    def stop(self):
        subprocess.run([STACK, "stop", self.root], capture_output=True, timeout=120)

    def sql(self, query, *args):
        """Runs one query with psql (positional args bound as :'v1', :'v2', ... so they
        are quoted by psql, never pasted in) and returns its rows as lists of strings.
        For checking invariants the API cannot show; tests act through the gateway."""
        cmd = ["psql", self.pg_dsn, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-F", "\t"]
        for i, a in enumerate(args, 1):
            cmd += ["-v", f"v{i}={a}"]
        r = subprocess.run(cmd, input=query, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr}")
        return [line.split("\t") for line in r.stdout.splitlines() if line]


def _child_env(extra):
    """The harness's environment with extra applied; a None value removes the variable
    (for a setting the harness or the runner's environment would otherwise pass)."""
    env = dict(os.environ)
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


class Proc:
    """One Cairn binary run with `env` (added to the harness's environment; a None value
    unsets that variable), output to `log`. start() returns at once; wait_ready() waits
    for its readiness URL; command() runs a subcommand of the same binary with the same
    env."""

    binary = None

    def __init__(self, name, env, log_dir):
        self.name = name
        self.env = dict(env)
        self.log = os.path.join(log_dir, f"{name}.log")
        self.popen = None

    @property
    def path(self):
        return os.path.join(BIN_DIR, self.binary)

    @property
    def ready_url(self):
        raise NotImplementedError

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def start(self):
        if not os.access(self.path, os.X_OK):
            raise RuntimeError(f"{self.path} is missing: run make first")
        env = _child_env(self.env)
        with open(self.log, "ab") as logf:
            logf.write(f"--- harness: starting {self.name}\n".encode())
            logf.flush()
            self.popen = subprocess.Popen([self.path], env=env, stdin=subprocess.DEVNULL,
                                          stdout=logf, stderr=subprocess.STDOUT,
                                          preexec_fn=_die_with_parent, close_fds=True)
        LIVE.append(self)
        return self

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def command(self, *args, env=None, input=None, timeout=60):
        """Runs `binary args...` to completion with this process's env (plus env, where
        None unsets) and returns the subprocess.CompletedProcess (text)."""
        return subprocess.run([self.path, *args], env=_child_env({**self.env, **(env or {})}),
                              input=input, capture_output=True, text=True, timeout=timeout)

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with status {self.popen.returncode} "
                                   f"before it was ready:\n{self.log_tail()}")
            if http_ok(self.ready_url, timeout=0.5):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready in {timeout}s:\n{self.log_tail()}")

    def signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout):
        """Waits for exit; returns the exit status (negative: killed by that signal)."""
        rc = self.popen.wait(timeout=timeout)
        if self in LIVE:
            LIVE.remove(self)
        return rc

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL after timeout seconds. Returns the exit status."""
        if self.popen is None:
            return None
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.popen.kill()
        return self.wait(10)

    def kill(self):
        """SIGKILL now, like a crashed machine. Returns once it is gone."""
        if self.popen is not None:
            if self.alive():
                self.popen.kill()
            self.wait(10)

    def restart(self, timeout=30):
        """Starts the same binary again, same env and ports, and waits until ready."""
        if self.alive():
            self.stop()
        self.start()
        return self.wait_ready(timeout)

    def log_tail(self, lines=30):
        try:
            with open(self.log, "rb") as f:
                data = f.read().decode(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(data[-lines:])

    def metrics(self):
        r = requests.get(self.metrics_url, timeout=5)
        r.raise_for_status()
        return r.text

    def set_faults(self, **faults):
        """PUT /faults on a service's admin port (the harness sets CAIRN_ADMIN_FAULTS=1):
        e.g. set_faults(abort_code="UNAVAILABLE", methods=["Login"]); no arguments clears
        them (DELETE). Returns the faults now in force."""
        if faults:
            r = requests.put(self.admin_url + "/faults", json=faults, timeout=5)
        else:
            r = requests.delete(self.admin_url + "/faults", timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def access_log(self, request_id):
        """A gateway's access-log record (dict) for request_id, or None."""
        try:
            with open(self.log, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            if '"type":"access"' in line and request_id in line:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("request_id") == request_id:
                    return rec
        return None


# The first admin, made by every auth the harness starts (CAIRN_BOOTSTRAP_ADMIN_*): the
# first start creates it in the shared database, later ones find it there. Tests must not
# fail its logins (per-account throttling) nor disable or demote it.
ADMIN_EMAIL = "admin@cairn.test"
ADMIN_PASSWORD = "bootstrap admin password 1"


class Auth(Proc):
    """cairn-auth signing with key_file. auth_env {"CAIRN_AUTH_KEY_FILE": None} starts it
    without one, so it keeps its signing keys in Postgres (and can rotate them)."""

    binary = "cairn-auth"

    def __init__(self, name, stack, key_file, log_dir, extra_env=None):
        self.rpc_port = free_port()
        self.admin_port = free_port()
        self.events_port = free_port()
        env = {
            "CAIRN_PG_DSN": stack.pg_dsn,
            "CAIRN_AUTH_LISTEN": self.addr_for(self.rpc_port),
            "CAIRN_AUTH_ADMIN": f"127.0.0.1:{self.admin_port}",
            "CAIRN_AUTH_EVENTS": self.addr_for(self.events_port),
            "CAIRN_AUTH_KEY_FILE": key_file,
            "CAIRN_AUTH_ISSUER": "cairn",
            "CAIRN_AUTH_AUDIENCE": "cairn-api",
            "CAIRN_AUTH_WORKERS": "4",
            "CAIRN_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
            "CAIRN_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
            # Per-account login throttling blocks after 5 failures by default; tests
            # written before it existed fail one account up to 7 times (test_020's timing
            # test). test_100 sets the production default on its own cluster.
            "CAIRN_AUTH_THROTTLE_AFTER": "10",
            # PUT /faults on the admin port, so a test can make one replica slow or
            # failing (lib/admin.h); never set outside tests.
            "CAIRN_ADMIN_FAULTS": "1",
        }
        env.update(extra_env or {})
        super().__init__(name, env, log_dir)

    @staticmethod
    def addr_for(port):
        return f"tcp://127.0.0.1:{port}"

    @property
    def addr(self):
        return self.addr_for(self.rpc_port)

    @property
    def events_addr(self):
        return self.addr_for(self.events_port)

    @property
    def admin_url(self):
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def ready_url(self):
        return self.admin_url + "/readyz"

    @property
    def metrics_url(self):
        return self.admin_url + "/metrics"


class Gateway(Proc):
    binary = "cairn-gateway"

    def __init__(self, name, auth_addrs, log_dir, extra_env=None, events_addrs=()):
        self.http_port = free_port()
        self.admin_port = free_port()
        env = {
            "CAIRN_HTTP_HOST": "127.0.0.1",
            "CAIRN_HTTP_PORT": str(self.http_port),
            "CAIRN_GATEWAY_ADMIN": f"127.0.0.1:{self.admin_port}",
            "CAIRN_THREADS": "2",
            "CAIRN_AUTH_ADDR": ",".join(auth_addrs),
            "CAIRN_AUTH_EVENTS_ADDR": ",".join(events_addrs),
            "CAIRN_MAX_BODY_BYTES": "1048576",
            "CAIRN_JWT_ISSUER": "cairn",
            "CAIRN_JWT_AUDIENCE": "cairn-api",
            "CAIRN_UPSTREAM_TIMEOUT_MS": "2000",
            # No policy file (no rate limits) unless a test gives one, so the suite does
            # not depend on deploy/gateway.yaml; CAIRN_TEST_GATEWAY_CONFIG runs every
            # harness gateway with that file instead (to check a config against the suite).
            "CAIRN_GATEWAY_CONFIG": os.environ.get("CAIRN_TEST_GATEWAY_CONFIG", ""),
        }
        env.update(extra_env or {})
        self.tls = bool(env.get("CAIRN_TLS_CERT"))
        super().__init__(name, env, log_dir)

    @property
    def url(self):
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def admin_url(self):
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def ready_url(self):
        # The admin port answers the same readiness as the main port, and stays plain
        # HTTP when the main port serves TLS.
        return self.admin_url + "/readyz"

    @property
    def metrics_url(self):
        return self.admin_url + "/metrics"


class Inference(Proc):
    """cairn-inference on the harness's database. The defaults make it quick to observe:
    prediction log flushed every 100 ms, drift counts every second, routing (aliases,
    experiments) polled every 200 ms."""

    binary = "cairn-inference"
    REFRESH_MS = 200

    def __init__(self, name, stack, log_dir, extra_env=None):
        self.rpc_port = free_port()
        self.admin_port = free_port()
        env = {
            "CAIRN_PG_DSN": stack.pg_dsn,
            "CAIRN_INFERENCE_LISTEN": Auth.addr_for(self.rpc_port),
            "CAIRN_INFERENCE_ADMIN": f"127.0.0.1:{self.admin_port}",
            "CAIRN_INFERENCE_WORKERS": "4",
            "CAIRN_PREDICTION_LOG_FLUSH_MS": "100",
            "CAIRN_DRIFT_FLUSH_S": "1",
            "CAIRN_INFERENCE_REFRESH_MS": str(self.REFRESH_MS),
            "CAIRN_MODEL_CACHE_BYTES": str(64 << 20),
            "CAIRN_PREDICT_MAX_ROWS": str(INFERENCE_MAX_ROWS),
            "CAIRN_ADMIN_FAULTS": "1",
        }
        env.update(extra_env or {})
        super().__init__(name, env, log_dir)

    @property
    def addr(self):
        return Auth.addr_for(self.rpc_port)

    @property
    def admin_url(self):
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def ready_url(self):
        return self.admin_url + "/readyz"

    @property
    def metrics_url(self):
        return self.admin_url + "/metrics"

    def healthy(self):
        """Alive and answering /healthz."""
        return self.alive() and http_ok(self.admin_url + "/healthz")


# Rows per predict call the harness's inference processes accept (CAIRN_PREDICT_MAX_ROWS).
INFERENCE_MAX_ROWS = 2000


class Cluster:
    """`replicas` cairn-auth processes, `inference` cairn-inference processes and one
    cairn-gateway in front of them."""

    _seq = 0

    def __init__(self, stack, key_file, log_dir, replicas=1, auth_env=None, gateway_env=None,
                 inference=0, inference_env=None):
        Cluster._seq += 1
        tag = f"c{Cluster._seq}"
        self.auths = [Auth(f"{tag}-auth-{i + 1}", stack, key_file, log_dir, auth_env)
                      for i in range(replicas)]
        self.inferences = [Inference(f"{tag}-inference-{i + 1}", stack, log_dir, inference_env)
                           for i in range(inference)]
        # Rate limits count in the stack's Redis (used only when a policy file has limits).
        genv = {"CAIRN_REDIS_ADDR": stack.redis_addr}
        if self.inferences:
            # Ready only once it reaches an inference replica too, so the first request
            # of a test is not a 503.
            genv.update({"CAIRN_INFERENCE_ADDR": ",".join(p.addr for p in self.inferences),
                         "CAIRN_READY_SERVICES": "auth,inference"})
        genv.update(gateway_env or {})
        self.gateway = Gateway(f"{tag}-gateway", [a.addr for a in self.auths], log_dir,
                               genv, events_addrs=[a.events_addr for a in self.auths])

    @property
    def auth(self):
        return self.auths[0]

    @property
    def inference(self):
        return self.inferences[0]

    @property
    def url(self):
        return self.gateway.url

    def procs(self):
        return [*self.auths, *self.inferences, self.gateway]

    def start(self, timeout=60):
        try:
            for p in [*self.auths, *self.inferences]:
                p.start()
            for p in [*self.auths, *self.inferences]:
                p.wait_ready(timeout)
            self.gateway.start()
            self.gateway.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Gateway first, then the services; TERM, KILL after 10 s. Returns exit codes."""
        return {p.name: p.stop() for p in [self.gateway, *self.auths, *self.inferences]}

    def api(self):
        return Api(self.url)


# ---------------------------------------------------------------- HTTP API

def unique_email(tag="user"):
    return f"{tag}-{uuid.uuid4().hex[:16]}@example.com"


def unique_model_name(tag="model"):
    """A model name no other test uses (the session's models share one database)."""
    return f"{tag}-{uuid.uuid4().hex[:12]}"


PASSWORD = "correct horse battery staple"


def bearer(credential):
    """Headers that present credential (an access token or an API key) as a bearer."""
    return {"Authorization": f"Bearer {credential}"} if credential else {}


def _query(**params):
    """Query parameters without the ones left as None."""
    return {k: v for k, v in params.items() if v is not None}


class Api:
    """The auth endpoints as methods, each returning the requests.Response. Methods that
    need credentials take `auth`: an access token or an API key, sent as a bearer."""

    def __init__(self, base, timeout=10):
        self.base = base
        self.timeout = timeout
        self.s = requests.Session()

    def request(self, method, path, **kw):
        kw.setdefault("timeout", self.timeout)
        return self.s.request(method, self.base + path, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json_body=None, **kw):
        if json_body is not None:
            kw["json"] = json_body
        return self.request("POST", path, **kw)

    def patch(self, path, json_body=None, **kw):
        if json_body is not None:
            kw["json"] = json_body
        return self.request("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def register(self, email, password=PASSWORD):
        return self.post("/v1/auth/register", {"email": email, "password": password})

    def login(self, email, password=PASSWORD):
        return self.post("/v1/auth/login", {"email": email, "password": password})

    def refresh(self, refresh_token):
        return self.post("/v1/auth/refresh", {"refresh_token": refresh_token})

    def logout(self, refresh_token, access_token=None):
        headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
        return self.post("/v1/auth/logout", {"refresh_token": refresh_token}, headers=headers)

    def me(self, access_token=None, authorization=None, api_key=None):
        headers = {}
        if authorization is not None:
            headers["Authorization"] = authorization
        elif access_token is not None:
            headers["Authorization"] = f"Bearer {access_token}"
        if api_key is not None:
            headers["X-API-Key"] = api_key
        return self.get("/v1/auth/me", headers=headers)

    # -- API keys
    def create_key(self, auth, name="test key", scopes=None, expires_in_days=None):
        body = {"name": name}
        if scopes is not None:
            body["scopes"] = scopes
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        return self.post("/v1/auth/api-keys", body, headers=bearer(auth))

    def list_keys(self, auth, limit=None, page_token=None):
        return self.get("/v1/auth/api-keys", headers=bearer(auth),
                        params=_query(limit=limit, page_token=page_token))

    def revoke_key(self, auth, key_id):
        return self.delete(f"/v1/auth/api-keys/{key_id}", headers=bearer(auth))

    def new_key(self, auth, name="test key", scopes=None, expires_in_days=None):
        """Creates a key (asserting 201); returns the ApiKeyCreated body."""
        r = self.create_key(auth, name, scopes, expires_in_days)
        assert r.status_code == 201, r.text
        return r.json()

    # -- self-service
    def change_password(self, auth, current_password, new_password):
        return self.post("/v1/auth/password", {"current_password": current_password,
                                               "new_password": new_password},
                         headers=bearer(auth))

    def logout_all(self, auth):
        return self.post("/v1/auth/logout-all", {}, headers=bearer(auth))

    # -- administration
    def list_users(self, auth, email=None, limit=None, page_token=None):
        return self.get("/v1/admin/users", headers=bearer(auth),
                        params=_query(email=email, limit=limit, page_token=page_token))

    def update_user(self, auth, user_id, role=None, disabled=None):
        body = _query(role=role, disabled=disabled)
        return self.patch(f"/v1/admin/users/{user_id}", body, headers=bearer(auth))

    def list_audit(self, auth, subject=None, action=None, limit=None, page_token=None):
        return self.get("/v1/admin/audit", headers=bearer(auth),
                        params=_query(subject=subject, action=action, limit=limit,
                                      page_token=page_token))

    # -- models (cairn-inference)
    def create_model(self, auth, name, description=None, log_sample_rate=None):
        body = _query(name=name, description=description, log_sample_rate=log_sample_rate)
        return self.post("/v1/models", body, headers=bearer(auth))

    def list_models(self, auth, limit=None, page_token=None):
        return self.get("/v1/models", headers=bearer(auth),
                        params=_query(limit=limit, page_token=page_token))

    def get_model(self, auth, name):
        return self.get(f"/v1/models/{name}", headers=bearer(auth))

    def update_model(self, auth, name, description=None, log_sample_rate=None):
        body = _query(description=description, log_sample_rate=log_sample_rate)
        return self.patch(f"/v1/models/{name}", body, headers=bearer(auth))

    def upload_version(self, auth, name, data, feature_names=None, description=None,
                       content_type="application/octet-stream"):
        """POSTs data (bytes: the model file) as the raw body."""
        params = _query(feature_names=",".join(feature_names) if feature_names is not None
                        else None, description=description)
        headers = {**bearer(auth), "Content-Type": content_type}
        return self.post(f"/v1/models/{name}/versions", data=data, params=params,
                         headers=headers, timeout=max(self.timeout, 30))

    def list_versions(self, auth, name, limit=None, page_token=None):
        return self.get(f"/v1/models/{name}/versions", headers=bearer(auth),
                        params=_query(limit=limit, page_token=page_token))

    def get_version(self, auth, name, version):
        return self.get(f"/v1/models/{name}/versions/{version}", headers=bearer(auth))

    def delete_version(self, auth, name, version):
        return self.delete(f"/v1/models/{name}/versions/{version}", headers=bearer(auth))

    def set_reference(self, auth, name, version, instances):
        return self.request("PUT", f"/v1/models/{name}/versions/{version}/reference",
                            json={"instances": instances}, headers=bearer(auth))

    def set_alias(self, auth, name, alias, version):
        return self.request("PUT", f"/v1/models/{name}/aliases/{alias}",
                            json={"version": version}, headers=bearer(auth))

    def delete_alias(self, auth, name, alias):
        return self.delete(f"/v1/models/{name}/aliases/{alias}", headers=bearer(auth))

    def set_experiment(self, auth, name, candidates, mirror=None, sticky_key=None):
        body = _query(candidates=candidates, mirror=mirror, sticky_key=sticky_key)
        return self.request("PUT", f"/v1/models/{name}/experiment", json=body,
                            headers=bearer(auth))

    def get_experiment(self, auth, name):
        return self.get(f"/v1/models/{name}/experiment", headers=bearer(auth))

    def delete_experiment(self, auth, name):
        return self.delete(f"/v1/models/{name}/experiment", headers=bearer(auth))

    def predict(self, auth, name, instances=None, version=None, alias=None, headers=None,
                body=None, **fields):
        """POST /v1/models/{name}:predict. body (bytes or str) replaces the JSON built from
        instances, version, alias and any other fields."""
        h = {**bearer(auth), **(headers or {})}
        if body is None:
            doc = _query(instances=instances, version=version, alias=alias, **fields)
            body = json.dumps(doc, allow_nan=False)
        h.setdefault("Content-Type", "application/json")
        return self.post(f"/v1/models/{name}:predict", data=body, headers=h)

    def feedback(self, auth, name, request_id, label=None, reward=None):
        body = _query(request_id=request_id, label=label, reward=reward)
        return self.post(f"/v1/models/{name}/feedback", body, headers=bearer(auth))

    def stats(self, auth, name, since=None, alpha=None):
        return self.get(f"/v1/models/{name}/stats", headers=bearer(auth),
                        params=_query(since=since, alpha=alpha))

    def drift(self, auth, name, version=None, window_s=None):
        return self.get(f"/v1/models/{name}/drift", headers=bearer(auth),
                        params=_query(version=version, window_s=window_s))

    @staticmethod
    def v2_path(model, version=None, suffix=""):
        p = f"/v2/models/{model}"
        if version is not None:
            p += f"/versions/{version}"
        return p + suffix

    def v2_get(self, auth, path):
        return self.get(path, headers=bearer(auth))

    def infer(self, auth, model, body, version=None, headers=None):
        """POST /v2/models/{model}[/versions/{version}]/infer; body is a dict (sent as
        JSON) or bytes/str (sent as is)."""
        h = {**bearer(auth), "Content-Type": "application/json", **(headers or {})}
        data = body if isinstance(body, (bytes, str)) else json.dumps(body, allow_nan=False)
        return self.post(self.v2_path(model, version, "/infer"), data=data, headers=h)

    # -- model shortcuts that assert success, for tests that are about something else
    def new_model(self, auth, tag="model", **kw):
        """Creates a model with a fresh name (asserting 201); returns the name."""
        name = unique_model_name(tag)
        r = self.create_model(auth, name, **kw)
        assert r.status_code == 201, r.text
        return name

    def upload(self, auth, name, trained, fmt="json", **kw):
        """Uploads trained (an xgbmodels.Trained) in format fmt (json | ubj | bin),
        asserting 201; returns the ModelVersion."""
        ctype = {"json": "application/json", "ubj": "application/ubjson"}.get(
            fmt, "application/octet-stream")
        r = self.upload_version(auth, name, trained.data(fmt), content_type=ctype, **kw)
        assert r.status_code == 201, f"upload of {trained.name}.{fmt}: {r.status_code} {r.text}"
        return r.json()

    def predicted(self, auth, name, instances, **kw):
        """Predicts, asserting 200; returns the body."""
        r = self.predict(auth, name, instances, **kw)
        assert r.status_code == 200, f"predict: {r.status_code} {r.text[:500]}"
        return r.json()

    def alias_ok(self, auth, name, alias, version):
        r = self.set_alias(auth, name, alias, version)
        assert r.status_code == 200, r.text
        return r.json()

    def experiment_ok(self, auth, name, candidates, mirror=None, sticky_key=None):
        r = self.set_experiment(auth, name, candidates, mirror, sticky_key)
        assert r.status_code == 200, r.text
        return r.json()

    def admin(self):
        """Signs in the bootstrap admin; returns a User."""
        r = self.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        assert r.status_code == 200, f"the bootstrap admin cannot log in: {r.text}"
        tokens = r.json()
        r = self.me(tokens["access_token"])
        assert r.status_code == 200, r.text
        u = User(ADMIN_EMAIL, ADMIN_PASSWORD, r.json())
        u.tokens = tokens
        return u

    def jwks(self):
        return self.get("/.well-known/jwks.json")

    def new_user(self, tag="user"):
        """Registers and logs in a fresh user; returns a User."""
        email = unique_email(tag)
        r = self.register(email)
        assert r.status_code == 201, r.text
        u = User(email, PASSWORD, r.json())
        r = self.login(email)
        assert r.status_code == 200, r.text
        u.tokens = r.json()
        return u


def parallel(base, fn, items, threads=4):
    """Calls fn(api, item) for every item on `threads` threads, each thread with its own
    Api on base; returns the results in item order (re-raising the first exception)."""
    local = threading.local()

    def run(item):
        if not hasattr(local, "api"):
            local.api = Api(base)
        return fn(local.api, item)

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        return list(ex.map(run, items))


class User:
    def __init__(self, email, password, record):
        self.email = email
        self.password = password
        self.record = record
        self.id = record["id"]
        self.tokens = None

    @property
    def access(self):
        return self.tokens["access_token"]

    @property
    def refresh(self):
        return self.tokens["refresh_token"]


def as_int(v):
    """An int64 from JSON: a number, or (proto3 JSON style) a decimal string."""
    if isinstance(v, bool):
        raise AssertionError(f"expected an integer, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, str) and re.fullmatch(r"-?\d+", v):
        return int(v)
    raise AssertionError(f"expected an integer, got {v!r}")


def assert_problem(r, status, field=None):
    """Checks that r is an application/problem+json error with this status (and, if
    field is given, an errors[] entry naming it). Returns the body."""
    assert r.status_code == status, f"want {status}, got {r.status_code}: {r.text[:500]}"
    ctype = r.headers.get("Content-Type", "")
    assert ctype.startswith("application/problem+json"), f"Content-Type {ctype!r}"
    body = r.json()
    for k in ("type", "title", "status", "detail", "request_id", "errors"):
        assert k in body, f"problem lacks {k!r}: {body}"
    assert body["status"] == status, body
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["errors"], list), body
    for e in body["errors"]:
        assert "field" in e and "message" in e, body
    rid = r.headers.get("X-Request-Id")
    assert rid and body["request_id"] == rid, (rid, body)
    if field is not None:
        fields = [e["field"] for e in body["errors"]]
        assert field in fields, f"no error names {field!r}: {body}"
    return body


def assert_v2_error(r, status):
    """Checks an Open Inference Protocol error: this status, a JSON body that is exactly
    {"error": "<non-empty message>"}. Returns the message."""
    assert r.status_code == status, f"want {status}, got {r.status_code}: {r.text[:500]}"
    ctype = r.headers.get("Content-Type", "")
    assert ctype.startswith("application/json"), f"Content-Type {ctype!r}: {r.text[:200]}"
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"], body
    return body["error"]


def assert_close(got, want, tol=1e-6, what="predictions"):
    """got (JSON numbers, nested lists) equals want (numbers or a numpy array; .tolist()
    is used when present) within tol absolute, element by element, same shape."""
    if hasattr(want, "tolist"):
        want = want.tolist()

    def walk(g, w, path):
        if isinstance(w, list):
            assert isinstance(g, list) and len(g) == len(w), \
                f"{what}{path}: shape differs: got {g!r:.200}, want {w!r:.200}"
            for i, (gi, wi) in enumerate(zip(g, w)):
                walk(gi, wi, f"{path}[{i}]")
        else:
            assert isinstance(g, (int, float)) and not isinstance(g, bool), \
                f"{what}{path}: not a number: {g!r}"
            assert abs(g - w) <= tol, f"{what}{path}: got {g!r}, want {w!r} (tol {tol})"

    walk(got, want, "")


# ---------------------------------------------------------------- raw HTTP/1.1

def raw_http(port, head, body=b"", timeout=10):
    """Sends head (str, without the blank line) and body over one HTTP/1.1 connection and
    returns (status, headers dict lower-cased, body bytes). A server may answer before it
    has read the whole body and close: a failed send is fine, the answer is still read."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        data = head.replace("\n", "\r\n").rstrip("\r\n").encode() + b"\r\n\r\n"
        try:
            s.sendall(data)
            if body:
                s.sendall(body)
        except OSError:
            pass
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                m = re.search(rb"(?im)^content-length:\s*(\d+)", buf[:head_end])
                if m and len(buf) >= head_end + 4 + int(m.group(1)):
                    break
    finally:
        s.close()
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        raise AssertionError(f"no HTTP response: {buf[:200]!r}")
    lines = buf[:head_end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, buf[head_end + 4:]


# ---------------------------------------------------------------- tokens

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_parts(token):
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), s


class Tokens:
    """Re-signs altered copies of real access tokens with the auth service's key (read
    from the PEM file the harness gave it), or with any other Ed25519 key."""

    def __init__(self, key_file):
        from cryptography.hazmat.primitives import serialization
        with open(key_file, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)

    @staticmethod
    def other_key():
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        return Ed25519PrivateKey.generate()

    def sign(self, header, claims, key=None):
        key = key or self.key
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        return signing_input + "." + b64url(key.sign(signing_input.encode()))

    def forge(self, token, header_changes=None, claim_changes=None, drop=(), key=None):
        """A copy of token with header/claims changed (None values delete), a new jti,
        signed by key (default: the real signing key)."""
        header, claims, _ = jwt_parts(token)
        claims["jti"] = uuid.uuid4().hex
        for src, changes in ((header, header_changes), (claims, claim_changes)):
            for k, v in (changes or {}).items():
                if v is None:
                    src.pop(k, None)
                else:
                    src[k] = v
        for k in drop:
            claims.pop(k, None)
        return self.sign(header, claims, key)


def unsigned(token, header_changes=None):
    """An `alg: none` style copy of token: header changed, signature empty."""
    header, claims, _ = jwt_parts(token)
    header.update(header_changes or {"alg": "none"})
    return (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
            b64url(json.dumps(claims, separators=(",", ":")).encode()) + ".")


# ---------------------------------------------------------------- API keys

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
API_KEY_RE = re.compile(r"^cairn_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}$")


def api_key_check(body):
    """The 6-character check of lib/apikey.h: CRC-32 of body in base62, most significant
    digit first."""
    crc = zlib.crc32(body.encode())
    out = ""
    for _ in range(6):
        out = _B62[crc % 62] + out
        crc //= 62
    return out


def api_key(key_id=None, secret=None):
    """A well-formed API key (right length, alphabet and checksum) for key_id and secret,
    random where not given: one auth never minted, unless key_id names a real key."""
    key_id = key_id or "".join(random.choice(_B62) for _ in range(12))
    secret = secret or "".join(random.choice(_B62) for _ in range(32))
    body = f"cairn_{key_id}_{secret}"
    return body + api_key_check(body)


# ---------------------------------------------------------------- Prometheus

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Returns [(name, {label: value}, float)] for every sample in Prometheus text."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line.strip())
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def metric_sum(text, name, **labels):
    """Sum of samples called name whose labels include all of labels (a callable value
    is a predicate on the label's value)."""
    total = 0.0
    for n, ls, v in parse_metrics(text):
        if n != name:
            continue
        ok = True
        for k, want in labels.items():
            have = ls.get(k)
            if callable(want):
                ok = have is not None and want(have)
            else:
                ok = have == want
            if not ok:
                break
        if ok:
            total += v
    return total
