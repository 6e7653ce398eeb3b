"""TLS at the edge: with CAIRN_TLS_CERT/CAIRN_TLS_KEY the gateway serves HTTPS, HTTP/2
negotiated by ALPN and HTTP/1.1 for clients that ask for it, with the same API; a half
TLS configuration, or a key that does not match, fails start-up with a reason."""

import os
import subprocess

import pytest
import requests
import urllib3

from cairn import BIN_DIR, assert_problem, free_port, unique_email

# The certificate is self-signed on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def make_cert(d, name):
    cert, key = os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tls"))
    return make_cert(d, "a"), make_cert(d, "b")


def curl_version(url, *flags):
    r = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", *flags, url],
                       capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


def test_https_with_http2_by_alpn(new_cluster, certs):
    (cert, key), _ = certs
    c = new_cluster(gateway_env={"CAIRN_TLS_CERT": cert, "CAIRN_TLS_KEY": key})
    base = c.gateway.url
    assert base.startswith("https://")
    assert curl_version(base + "/healthz", "--http2") == "2 200"
    assert curl_version(base + "/healthz", "--http1.1") == "1.1 200"
    # Plain HTTP on the TLS port is refused, not served.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(base.replace("https://", "http://") + "/healthz", timeout=3)
    # The API works the same over TLS.
    email = unique_email("tls")
    r = requests.post(base + "/v1/auth/register", json={"email": email, "password": "correct horse battery"},
                      verify=False, timeout=10)
    assert r.status_code == 201, r.text
    r = requests.post(base + "/v1/auth/login", json={"email": email, "password": "correct horse battery"},
                      verify=False, timeout=10)
    assert r.status_code == 200, r.text
    r = requests.get(base + "/v1/auth/me", headers={"Authorization": "Bearer " + r.json()["access_token"]},
                     verify=False, timeout=10)
    assert r.status_code == 200 and r.json()["email"] == email
    assert_problem(requests.get(base + "/nope", verify=False, timeout=10), 404)


@pytest.mark.parametrize("which", ["cert only", "key only", "mismatched key", "missing file"])
def test_bad_tls_configuration_fails_start(certs, which, tmp_path):
    (cert_a, key_a), (_, key_b) = certs
    env = dict(os.environ, CAIRN_HTTP_PORT=str(free_port()), CAIRN_GATEWAY_ADMIN=f"127.0.0.1:{free_port()}",
               CAIRN_AUTH_ADDR="tcp://127.0.0.1:1")
    env.update({
        "cert only": {"CAIRN_TLS_CERT": cert_a},
        "key only": {"CAIRN_TLS_KEY": key_a},
        "mismatched key": {"CAIRN_TLS_CERT": cert_a, "CAIRN_TLS_KEY": key_b},
        "missing file": {"CAIRN_TLS_CERT": str(tmp_path / "none.crt"), "CAIRN_TLS_KEY": key_a},
    }[which])
    r = subprocess.run([os.path.join(BIN_DIR, "cairn-gateway")], env=env, capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 2, r.stderr
    assert "CAIRN_TLS" in r.stderr
