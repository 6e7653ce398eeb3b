"""The gateway's policy file (CAIRN_GATEWAY_CONFIG, gateway/config.c): an invalid file
stops start-up with FILE:LINE: key: what is wrong; SIGHUP applies a new file at once, and
an invalid one is refused with the same kind of message while the old rules stay."""

import os
import re
import signal
import uuid

import requests

import cairn
from cairn import wait_until

JWKS = "/.well-known/jwks.json"


def write_config(folder, text, name=None):
    path = os.path.join(str(folder), name or f"gateway-{uuid.uuid4().hex[:6]}.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


BAD = [
    # (file text, line, key path, message)
    ("replicas: 2\nrate_limit: []\n", 2, "rate_limit", "unknown key (expected one of: replicas, "),
    ("rate_limits:\n  - name: a\n    limit: ten\n", 3, "rate_limits[0].limit", "expected an integer"),
    ("rate_limits:\n  - name: a\n    limit: 10\n    window_s: 0\n", 4, "rate_limits[0].window_s",
     "0 is out of range [1, 2678400]"),
    ("rate_limits:\n  - {name: a, limit: 1}\n  - {name: a, limit: 2}\n", 3, "rate_limits[1].name",
     '"a" is already the name of rate_limits[0]'),
    ("rate_limits:\n  - {name: a, limit: 1, replaces: b}\n", 2, "rate_limits[0].replaces",
     '"b" is not the name of a policy'),
    ("route_groups:\n  x: [\"/v9/*\"]\n", 2, "route_groups.x[0]", '"/v9/*" matches no route'),
    ("trusted_proxies: [10.0.0.0/40]\n", 1, "trusted_proxies[0]", '"10.0.0.0/40" is not an IPv4'),
    ("redis:\n  timeout_ms: 5\n  probe: 10\n", 3, "redis.probe", "unknown key"),
]


def test_invalid_file_refused_at_start(tmp_path, log_dir):
    gw = cairn.Gateway("config-check", ["tcp://127.0.0.1:1"], log_dir)
    for text, line, key, msg in BAD:
        path = write_config(tmp_path, text)
        r = gw.command(env={"CAIRN_GATEWAY_CONFIG": path}, timeout=20)
        assert r.returncode == 2, (text, r.returncode, r.stderr)
        want = f"cairn-gateway: CAIRN_GATEWAY_CONFIG: {path}:{line}: {key}: {msg}"
        assert want in r.stderr, f"want {want!r} in:\n{r.stderr}"
    r = gw.command(env={"CAIRN_GATEWAY_CONFIG": str(tmp_path / "missing.yaml")}, timeout=20)
    assert r.returncode == 2
    assert f"{tmp_path}/missing.yaml: cannot read: No such file or directory" in r.stderr


def test_check_config_command(tmp_path, log_dir):
    """--check-config validates a file as start-up would, starting nothing."""
    gw = cairn.Gateway("config-check-cmd", ["tcp://127.0.0.1:1"], log_dir)
    for text, line, key, msg in BAD:
        path = write_config(tmp_path, text)
        r = gw.command("--check-config", path, timeout=20)
        assert r.returncode == 1, (text, r.returncode, r.stderr)
        assert f"{path}:{line}: {key}: {msg}" in r.stderr, r.stderr
    good = write_config(tmp_path, "rate_limits:\n  - {name: a, limit: 5}\n")
    r = gw.command("--check-config", good, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{good}: ok (") and "1 rate-limit policies" in r.stdout, r.stdout
    r = gw.command("--check-config", timeout=20)
    assert r.returncode == 2 and "usage" in r.stderr


def test_help_lists_the_settings(log_dir):
    r = cairn.Gateway("config-help", ["tcp://127.0.0.1:1"], log_dir).command("--help")
    assert r.returncode == 0
    assert "CAIRN_GATEWAY_CONFIG" in r.stdout and "CAIRN_REDIS_ADDR" in r.stdout


def jwks_status(url):
    return requests.get(url + JWKS, timeout=5)


def policy_file(name, limit):
    return f"""
redis:
  timeout_ms: 200
route_groups:
  jwks: ["GET {JWKS}"]
rate_limits:
  - {{name: {name}, groups: [jwks], key: ip, limit: {limit}, window_s: 3600}}
"""


def log_count(gw, event):
    with open(gw.log) as f:
        return f.read().count(f'"event":"{event}"')


def test_sighup_reload_applies_and_invalid_keeps_old(new_cluster, tmp_path):
    a, b = f"before-{uuid.uuid4().hex[:8]}", f"after-{uuid.uuid4().hex[:8]}"
    path = write_config(tmp_path, policy_file(a, 3))
    c = new_cluster(gateway_env={"CAIRN_GATEWAY_CONFIG": path})
    gw = c.gateway
    got = [jwks_status(c.url) for _ in range(4)]
    assert [r.status_code for r in got] == [200, 200, 200, 429]
    assert got[0].headers["RateLimit-Policy"] == f'"{a}";q=3;w=3600'

    # A new file, then SIGHUP: the new policy is in force for the next request.
    write_config(tmp_path, policy_file(b, 5), os.path.basename(path))
    gw.signal(signal.SIGHUP)
    wait_until(lambda: log_count(gw, "GW-CONFIG-RELOADED") == 1, 5, what="reload logged")
    got = [jwks_status(c.url) for _ in range(6)]
    assert [r.status_code for r in got] == [200] * 5 + [429], [r.status_code for r in got]
    assert all(r.headers["RateLimit-Policy"] == f'"{b}";q=5;w=3600' for r in got)

    # An invalid file: refused with file:line:key, logged; the previous rules stay.
    write_config(tmp_path, policy_file(b, 5).replace("window_s: 3600}", "window_s: 3600, burst: 0}"),
                 os.path.basename(path))
    gw.signal(signal.SIGHUP)
    wait_until(lambda: log_count(gw, "GW-CONFIG-REJECTED") == 1, 5, what="rejection logged")
    with open(gw.log) as f:
        line = [x for x in f.read().splitlines() if "GW-CONFIG-REJECTED" in x][0]
    assert re.search(re.escape(path) + r":7: rate_limits\[0\]\.burst: 0 is out of range", line), line
    r = jwks_status(c.url)
    assert r.status_code == 429
    assert r.headers["RateLimit-Policy"] == f'"{b}";q=5;w=3600'
    assert gw.alive()
