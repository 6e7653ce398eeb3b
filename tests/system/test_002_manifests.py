"""Static checks of the deployment files: k8s/ (kustomize) and deploy/ (Docker, compose,
Prometheus, Grafana). No cluster, no Docker engine, no running stack.

Kubernetes: every YAML parses; every file a kustomization names exists and every patch
targets an object of its base; every Deployment has liveness and readiness probes on its
admin port, resource requests and limits, a non-root read-only container, a grace period
longer than CAIRN_DRAIN_MS plus its preStop pause, and a PodDisruptionBudget; every
Service selects a Deployment and targets ports its containers declare; every ConfigMap and
Secret a pod reads exists or is documented as created outside. When `kubectl` (with its
built-in kustomize) is on PATH, each overlay is also rendered and checked as a whole.

Compose: every Cairn container has a /healthz health check on its admin port, Prometheus
scrapes every admin port, the gateway's upstream addresses name compose services, and
the Dockerfile builds with the -dev packages of scripts/install-deps and runs non-root.

Both: the gateway reads a policy file (CAIRN_GATEWAY_CONFIG) that is mounted where it
looks, from a file in the repository that `cairn-gateway --check-config` accepts (needs
the built gateway), and counts its rate limits in Redis (CAIRN_REDIS_ADDR).
"""

import json
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
DEPLOY = ROOT / "deploy"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
# Secrets that an overlay expects to be created from a secret store, not generated.
EXTERNAL_SECRETS = {"cairn-pg"}


# ---- helpers ----

def yaml_files(*dirs):
    out = []
    for d in dirs:
        out += [p for p in d.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()]
    return sorted(out)


def load_all(path):
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def rel(path):
    return str(pathlib.Path(path).relative_to(ROOT))


def kustomization_resources(kdir):
    """The objects a kustomization's own resource files hold (bases followed), as a list."""
    k = load_all(kdir / "kustomization.yaml")[0]
    docs = []
    for r in k.get("resources", []):
        p = kdir / r
        if p.is_dir():
            docs += kustomization_resources(p)
        elif p.is_file():
            docs += load_all(p)
    return docs


def base_configmap_literals(kdir):
    """KEY=value literals of every configMapGenerator, bases first, overlays merged on top."""
    k = load_all(kdir / "kustomization.yaml")[0]
    env = {}
    for r in k.get("resources", []):
        if (kdir / r).is_dir():
            env.update(base_configmap_literals(kdir / r))
    for g in k.get("configMapGenerator", []):
        for lit in g.get("literals", []):
            key, _, value = lit.partition("=")
            env[key] = value
    return env


def containers(deploy):
    return deploy["spec"]["template"]["spec"]["containers"]


def port_number(container, port):
    """A probe's or Service's target port as a number, resolving a container port name."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def check_deployment(d):
    """Problems with one Deployment, as strings."""
    name = d["metadata"]["name"]
    spec = d["spec"]["template"]["spec"]
    pod_sc = spec.get("securityContext", {})
    bad = []
    for c in containers(d):
        where = f"Deployment {name} container {c['name']}"
        admin = port_number(c, "admin")
        if admin is None:
            bad.append(f"{where}: no container port named 'admin'")
        for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            probe = c.get(kind)
            if not probe or "httpGet" not in probe:
                bad.append(f"{where}: no {kind} (httpGet {path})")
                continue
            got = port_number(c, probe["httpGet"].get("port"))
            if admin is not None and got != admin:
                bad.append(f"{where}: {kind} on port {probe['httpGet'].get('port')}, not the admin port {admin}")
            if probe["httpGet"].get("path") != path:
                bad.append(f"{where}: {kind} path {probe['httpGet'].get('path')}, expected {path}")
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(part, {}):
                    bad.append(f"{where}: no resources.{part}.{r}")
        sc = c.get("securityContext", {})
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if non_root is not True:
            bad.append(f"{where}: runAsNonRoot is not true")
        if uid == 0:
            bad.append(f"{where}: runAsUser is 0")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{where}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{where}: allowPrivilegeEscalation is not false")
    return bad


def prestop_seconds(c):
    cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if len(cmd) == 2 and cmd[0] == "sleep":
        return float(cmd[1])
    return 0.0


def check_set(docs, drain_ms, external_secrets=frozenset()):
    """Whole-set checks: Deployments, grace vs drain, Services, PDBs, references."""
    bad = []
    deploys = [d for d in docs if d.get("kind") == "Deployment"]
    services = [d for d in docs if d.get("kind") == "Service"]
    pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget"]
    configmaps = {d["metadata"]["name"] for d in docs if d.get("kind") == "ConfigMap"}
    secrets = {d["metadata"]["name"] for d in docs if d.get("kind") == "Secret"}
    if not deploys:
        bad.append("no Deployment at all")
    for d in deploys:
        name = d["metadata"]["name"]
        bad += check_deployment(d)
        spec = d["spec"]["template"]["spec"]
        grace_ms = 1000 * spec.get("terminationGracePeriodSeconds", 30)
        for c in containers(d):
            need = drain_ms + 1000 * prestop_seconds(c) + 1000  # svc.c allows drain_ms + 1 s
            if grace_ms <= need:
                bad.append(f"Deployment {name}: terminationGracePeriodSeconds {grace_ms // 1000} s is not above "
                           f"CAIRN_DRAIN_MS {drain_ms} ms + preStop {prestop_seconds(c)} s + 1 s")
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef", {}).get("name")
                if ref and ref not in configmaps:
                    bad.append(f"Deployment {name}: envFrom ConfigMap {ref} does not exist")
                ref = ef.get("secretRef", {}).get("name")
                if ref and ref not in secrets | set(external_secrets):
                    bad.append(f"Deployment {name}: envFrom Secret {ref} does not exist")
            for e in c.get("env", []):
                vf = e.get("valueFrom", {})
                ref = vf.get("secretKeyRef", {}).get("name")
                if ref and ref not in secrets | set(external_secrets):
                    bad.append(f"Deployment {name}: env {e['name']} reads Secret {ref}, which does not exist")
                ref = vf.get("configMapKeyRef", {}).get("name")
                if ref and ref not in configmaps:
                    bad.append(f"Deployment {name}: env {e['name']} reads ConfigMap {ref}, which does not exist")
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        sel = d["spec"]["selector"].get("matchLabels", {})
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            bad.append(f"Deployment {name}: selector {sel} does not match its pod labels {labels}")
        if not any(all(labels.get(k) == v for k, v in p["spec"]["selector"].get("matchLabels", {}).items())
                   for p in pdbs):
            bad.append(f"Deployment {name}: no PodDisruptionBudget selects its pods")
    for s in services:
        name = s["metadata"]["name"]
        sel = s["spec"].get("selector", {})
        targets = [d for d in deploys
                   if sel and all(d["spec"]["template"]["metadata"].get("labels", {}).get(k) == v
                                  for k, v in sel.items())]
        if not targets:
            bad.append(f"Service {name}: selector {sel} matches no Deployment")
            continue
        for p in s["spec"].get("ports", []):
            target = p.get("targetPort", p["port"])
            for d in targets:
                if not any(port_number(c, target) is not None and
                           any(cp["containerPort"] == port_number(c, target) for cp in c.get("ports", []))
                           for c in containers(d)):
                    bad.append(f"Service {name} port {p.get('name', p['port'])}: targetPort {target} is not a "
                               f"container port of Deployment {d['metadata']['name']}")
    return bad


# ---- every file parses ----

@pytest.mark.parametrize("path", yaml_files(K8S, DEPLOY), ids=rel)
def test_yaml_parses(path):
    load_all(path)


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.json")), ids=rel)
def test_json_parses(path):
    json.loads(path.read_text())


# ---- kustomize ----

KUSTOMIZATIONS = sorted(K8S.rglob("kustomization.yaml"))


def test_layout():
    assert (K8S / "base" / "kustomization.yaml").is_file(), "k8s/base/kustomization.yaml is missing"
    names = {p.name for p in OVERLAYS}
    assert {"dev", "prod"} <= names, f"overlays found: {sorted(names)}; dev and prod are expected"


@pytest.mark.parametrize("kfile", KUSTOMIZATIONS, ids=rel)
def test_kustomization_files_exist(kfile):
    kdir = kfile.parent
    k = load_all(kfile)[0]
    missing = []
    for r in k.get("resources", []):
        p = kdir / r
        if not (p.is_file() or (p.is_dir() and (p / "kustomization.yaml").is_file())):
            missing.append(f"resources: {r}")
    for p in k.get("patches", []):
        if "path" in p and not (kdir / p["path"]).is_file():
            missing.append(f"patches: {p['path']}")
    for p in k.get("patchesStrategicMerge", []):
        if not (kdir / p).is_file():
            missing.append(f"patchesStrategicMerge: {p}")
    for gen in ("configMapGenerator", "secretGenerator"):
        for g in k.get(gen, []):
            for f in g.get("files", []) + g.get("envs", []):
                if not (kdir / f.split("=", 1)[-1]).is_file():
                    missing.append(f"{gen} {g['name']}: {f}")
    assert not missing, f"{rel(kfile)} names files that do not exist: " + ", ".join(missing)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_overlay_patches_target_base_objects(overlay):
    k = load_all(overlay / "kustomization.yaml")[0]
    objects = {(d["kind"], d["metadata"]["name"]) for d in kustomization_resources(overlay)}
    stray = []
    for p in k.get("patches", []):
        if "path" not in p:
            continue
        for doc in load_all(overlay / p["path"]):
            key = (doc.get("kind"), doc.get("metadata", {}).get("name"))
            if key not in objects:
                stray.append(f"{p['path']}: {key[0]} {key[1]}")
    for r in k.get("replicas", []):
        if ("Deployment", r["name"]) not in objects:
            stray.append(f"replicas: {r['name']}")
    assert not stray, f"{rel(overlay)} patches objects its bases do not have: " + ", ".join(stray)


def test_base_manifests():
    base = K8S / "base"
    docs = kustomization_resources(base)
    # The base's ConfigMap is generated; stand in for it so references resolve.
    k = load_all(base / "kustomization.yaml")[0]
    docs += [{"kind": "ConfigMap", "metadata": {"name": g["name"]}} for g in k.get("configMapGenerator", [])]
    drain = int(base_configmap_literals(base).get("CAIRN_DRAIN_MS", "10000"))
    bad = check_set(docs, drain, EXTERNAL_SECRETS)
    assert not bad, "k8s/base:\n" + "\n".join(bad)


def test_base_services_and_probes_per_binary():
    docs = kustomization_resources(K8S / "base")
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for name in ("gateway", "auth", "inference"):
        assert ("Deployment", name) in kinds, f"k8s/base has no Deployment {name}"
        assert ("Service", name) in kinds, f"k8s/base has no Service {name}"
    gw = kinds[("Service", "gateway")]["spec"]
    assert gw.get("type", "ClusterIP") == "ClusterIP"
    assert {(p["port"], p.get("targetPort")) for p in gw["ports"]} >= {(80, "http"), (9100, "admin")}
    for name, port in (("auth", 7101), ("inference", 7104)):
        svc = kinds[("Service", name)]["spec"]
        assert svc.get("clusterIP") == "None", f"Service {name} must be headless so the gateway sees every replica"
        assert port in {p["port"] for p in svc["ports"]}
    # The gateway reaches each service by its Service name, on the port it serves.
    env = base_configmap_literals(K8S / "base")
    assert env.get("CAIRN_AUTH_ADDR") == "tcp://auth:7101"
    assert env.get("CAIRN_INFERENCE_ADDR") == "tcp://inference:7104"
    assert env.get("CAIRN_INFERENCE_LISTEN", "").endswith(":7104")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_overlay_renders(overlay):
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {rel(overlay)} failed:\n{out.stderr}"
    docs = [d for d in yaml.safe_load_all(out.stdout) if d is not None]
    drain = None
    for d in docs:
        if d.get("kind") == "ConfigMap" and "CAIRN_DRAIN_MS" in d.get("data", {}):
            drain = int(d["data"]["CAIRN_DRAIN_MS"])
    assert drain is not None, "no ConfigMap sets CAIRN_DRAIN_MS"
    bad = check_set(docs, drain, EXTERNAL_SECRETS)
    namespaces = {d["metadata"]["name"] for d in docs if d.get("kind") == "Namespace"}
    for d in docs:
        ns = d["metadata"].get("namespace")
        if d.get("kind") != "Namespace" and ns not in namespaces:
            bad.append(f"{d['kind']} {d['metadata']['name']} is in namespace {ns}, which the overlay does not create")
    assert not bad, f"{rel(overlay)} rendered:\n" + "\n".join(bad)


# ---- docker compose, Prometheus, Dockerfile ----

@pytest.fixture(scope="module")
def compose():
    return load_all(DEPLOY / "docker-compose.yml")[0]


def cairn_services(compose):
    return {n: s for n, s in compose["services"].items()
            if "build" in s or str(s.get("image", "")).startswith("cairn")}


def admin_port(svc):
    for key, value in svc.get("environment", {}).items():
        if re.fullmatch(r"CAIRN_[A-Z_]+_ADMIN", key):
            return int(str(value).rsplit(":", 1)[1])
    return None


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(text))
    assert m, f"cannot read duration {text!r}"
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def test_compose_services(compose):
    names = set(compose["services"])
    assert {"postgres", "redis", "gateway", "prometheus"} <= names, f"compose services: {sorted(names)}"
    assert any(s.get("command", [None])[0] == "cairn-auth" for s in compose["services"].values()), \
        "no service runs cairn-auth"
    assert str(compose["services"]["postgres"]["image"]).startswith("postgres:15")
    assert str(compose["services"]["redis"]["image"]).startswith("redis:7")


def test_compose_healthchecks_and_drain(compose):
    bad = []
    for name, s in cairn_services(compose).items():
        port = admin_port(s)
        test = " ".join(s.get("healthcheck", {}).get("test", []))
        if port is None:
            bad.append(f"{name}: no CAIRN_*_ADMIN setting")
        elif f"127.0.0.1:{port}/healthz" not in test:
            bad.append(f"{name}: health check {test!r} does not probe /healthz on admin port {port}")
        drain_ms = int(s.get("environment", {}).get("CAIRN_DRAIN_MS", 10000))
        if seconds(s.get("stop_grace_period", "10s")) * 1000 <= drain_ms:
            bad.append(f"{name}: stop_grace_period {s.get('stop_grace_period', '10s')} is not above "
                       f"CAIRN_DRAIN_MS {drain_ms}")
    assert not bad, "\n".join(bad)


def test_compose_gateway_reaches_services(compose):
    env = compose["services"]["gateway"]["environment"]
    bad = []
    for key, value in env.items():
        if not re.fullmatch(r"CAIRN_[A-Z]+_ADDR", key):
            continue
        if key == "CAIRN_REDIS_ADDR":   # host:port of a Redis, not an nng address
            host, _, port = str(value).partition(":")
            if host not in compose["services"] or not str(compose["services"][host].get("image", "")).startswith("redis:"):
                bad.append(f"{key}: {host} is not the compose Redis")
            continue
        for addr in str(value).split(","):
            m = re.fullmatch(r"tcp://([^:]+):(\d+)", addr.strip())
            if not m:
                bad.append(f"{key}: {addr!r} is not tcp://host:port")
                continue
            host, port = m.group(1), m.group(2)
            svc = compose["services"].get(host)
            if svc is None:
                bad.append(f"{key}: {host} is not a compose service")
                continue
            listen = [v for k, v in svc.get("environment", {}).items() if k.endswith("_LISTEN")]
            if not any(str(v).endswith(f":{port}") for v in listen):
                bad.append(f"{key}: {host} does not listen on port {port} ({listen})")
    assert not bad, "\n".join(bad)


def test_prometheus_scrapes_every_admin_port(compose):
    prom = load_all(DEPLOY / "prometheus" / "prometheus.yml")[0]
    targets = set()
    for job in prom["scrape_configs"]:
        for sc in job.get("static_configs", []):
            targets.update(sc.get("targets", []))
    wanted = {f"{n}:{admin_port(s)}" for n, s in cairn_services(compose).items()}
    missing = wanted - targets
    assert not missing, f"prometheus.yml does not scrape: {sorted(missing)}"


def test_grafana_dashboard_uses_cairn_metrics():
    text = "\n".join(p.read_text() for p in DEPLOY.glob("grafana/**/*.json"))
    for metric in ("cairn_http_requests_total", "cairn_http_request_duration_seconds", "cairn_rpc_calls_total"):
        assert metric in text, f"no Grafana dashboard under deploy/grafana shows {metric}"


def install_deps_build_packages():
    text = (ROOT / "scripts" / "install-deps").read_text()
    block = re.search(r"PKGS=\((.*?)\n\)", text, re.S).group(1)
    pkgs, section = [], None
    for line in block.splitlines():
        line = line.strip()
        if line.startswith("#"):
            section = line.lstrip("# ").split()[0]
            continue
        if section == "build":
            pkgs += line.split()
    return pkgs


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    stages = re.findall(r"^FROM\s+(\S+)", logical, re.M)
    assert len(stages) >= 2, "the Dockerfile must be multi-stage"
    assert "bookworm-slim" in stages[-1] or stages[-1].endswith("-slim"), \
        f"the runtime stage should be debian:bookworm-slim, is {stages[-1]}"
    build_stage = logical.split("\nFROM ")[1]
    missing = [p for p in install_deps_build_packages() if p.endswith("-dev") and p not in build_stage.split()
               and not p.startswith("libclang")]
    assert not missing, f"the build stage does not install these -dev packages of scripts/install-deps: {missing}"
    users = re.findall(r"^USER\s+(\S+)", logical, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must end with a non-root USER"
    assert re.search(r"^RUN .*\bmake\b", logical, re.M), "the build stage must run make"
    assert "/usr/local/bin" in logical, "binaries go to /usr/local/bin"


# ---- the gateway's policy file ----

GATEWAY = ROOT / "build" / "bin" / "cairn-gateway"


def check_config(path):
    if not GATEWAY.exists():
        pytest.fail(f"{GATEWAY} is missing: run `make` first")
    out = subprocess.run([str(GATEWAY), "--check-config", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"{rel(path)} is refused: {out.stderr.strip()}"


def test_compose_gateway_policy_file(compose):
    gw = compose["services"]["gateway"]
    target = gw["environment"].get("CAIRN_GATEWAY_CONFIG")
    assert target, "the compose gateway has no CAIRN_GATEWAY_CONFIG"
    assert gw["environment"].get("CAIRN_REDIS_ADDR") == "redis:6379"
    mounts = [v.split(":") for v in gw.get("volumes", []) if isinstance(v, str)]
    src = [m[0] for m in mounts if len(m) >= 2 and m[1] == target]
    assert src, f"nothing is mounted at {target} in the gateway container"
    check_config(DEPLOY / src[0])


def test_k8s_gateway_policy_file():
    base = K8S / "base"
    env = base_configmap_literals(base)
    target = env.get("CAIRN_GATEWAY_CONFIG")
    assert target and env.get("CAIRN_REDIS_ADDR"), "the ConfigMap sets no CAIRN_GATEWAY_CONFIG or CAIRN_REDIS_ADDR"
    mount_dir, name = target.rsplit("/", 1)
    docs = kustomization_resources(base)
    deploy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateway")
    c = containers(deploy)[0]
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    assert mount_dir in mounts, f"the gateway mounts nothing at {mount_dir}"
    vol = next(v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == mounts[mount_dir])
    cm = vol.get("configMap", {}).get("name")
    k = load_all(base / "kustomization.yaml")[0]
    gen = next((g for g in k.get("configMapGenerator", []) if g["name"] == cm), None)
    assert gen, f"the ConfigMap {cm} mounted at {mount_dir} is not generated by k8s/base"
    files = dict(f.split("=", 1) if "=" in f else (pathlib.Path(f).name, f) for f in gen.get("files", []))
    assert name in files, f"ConfigMap {cm} has no key {name} (keys: {sorted(files)})"
    path = base / files[name]
    check_config(path)
    # The Redis fallback admits limit/replicas per gateway: the file's replicas is base's.
    assert load_all(path)[0].get("replicas") == deploy["spec"]["replicas"]
