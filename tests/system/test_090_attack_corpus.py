"""The attack corpus: forged and malformed credentials at the edge, SQL metacharacters in
every text field of the auth endpoints, and the refresh-token race.

CORPUS is one line per case: what is sent, and the answer it must get. Forged tokens are
made from a real one, most re-signed with the service's own key (the harness gave it the
PEM), so each differs from an accepted token in the one way its name says. Every 401 must
come with WWW-Authenticate error="invalid_token" and bump the gateway's
cairn_authn_refused_total by one; a malformed Authorization header is 400
invalid_request and bumps nothing; a valid key used beyond its scopes is 403. After the
corpus the gateway and auth still run and the real token still works."""

import hashlib
import hmac
import json
import threading
import time
import uuid

import pytest

from cairn import (PASSWORD, Api, Tokens, api_key, assert_problem, b64url, b64url_decode, jwt_parts,
                   metric_sum, unique_email, unsigned, wait_until)

SQL = ["'; DROP TABLE auth.users; --", '" OR 1=1 --', "\\", "%_"]


class Material:
    """What the corpus forges from: a real user and token, its JWK, and API keys in every
    state (live, revoked, expired, of a disabled user, of an admin but scoped to predict)."""

    def __init__(self, api, tokens, stack):
        self.api, self.tokens = api, tokens
        self.user = api.new_user("corpus")
        self.token = self.user.access
        self.header, self.claims, _ = jwt_parts(self.token)
        self.jwk = next(k for k in api.jwks().json()["keys"] if k["kid"] == self.header["kid"])
        self.other = Tokens.other_key()
        admin = api.admin()

        created = api.new_key(self.user.access, name="live")
        self.key, self.key_id = created["secret"], created["key"]["id"]

        revoked = api.new_key(self.user.access, name="revoked")
        assert api.me(revoked["secret"]).status_code == 200  # cached, then revoked
        assert api.revoke_key(self.user.access, revoked["key"]["id"]).status_code == 204
        self.revoked_key = revoked["secret"]

        expired = api.new_key(self.user.access, name="expired", expires_in_days=1)
        # No key can be made already expired (1 day at least): age this one in place.
        stack.sql("UPDATE auth.api_keys SET expires_at = now() - interval '1 second' "
                  "WHERE id = :'v1'", expired["key"]["id"])
        self.expired_key = expired["secret"]

        victim = api.new_user("corpus-disabled")
        self.disabled_key = api.new_key(victim.access, name="disabled")["secret"]
        assert api.me(self.disabled_key).status_code == 200
        assert api.update_user(admin.access, victim.id, disabled=True).status_code == 200

        self.predict_only = api.new_key(admin.access, name="predict only", scopes=["predict"])["secret"]
        for k in (self.revoked_key, self.disabled_key):
            wait_until(lambda k=k: api.me(k).status_code == 401, timeout=2, what="key refused")

    # -- forging
    def forge(self, header=None, claims=None, drop=(), key=None):
        return self.tokens.forge(self.token, header, claims, drop, key)

    def raw(self, header_text, payload_text, key=None):
        """Signs exact JSON texts (for what json.dumps will not write)."""
        signing_input = b64url(header_text.encode()) + "." + b64url(payload_text.encode())
        return signing_input + "." + b64url((key or self.tokens.key).sign(signing_input.encode()))

    def header_text(self):
        return json.dumps(self.header, separators=(",", ":"))

    def claims_text(self, **changes):
        c = dict(self.claims, jti=uuid.uuid4().hex, **changes)
        return json.dumps(c, separators=(",", ":"))

    def hs256(self, secret):
        header = dict(self.header, alg="HS256")
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(self.claims).encode()))
        return signing_input + "." + b64url(hmac.new(secret, signing_input.encode(),
                                                     hashlib.sha256).digest())

    def public_pem(self):
        from cryptography.hazmat.primitives import serialization
        return self.tokens.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def other_jwk(self):
        from cryptography.hazmat.primitives import serialization
        raw = self.other.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}

    def with_header(self, changes):
        """The real token with its header changed and its signature kept."""
        h, p, s = self.token.split(".")
        header = dict(self.header, **changes)
        return b64url(json.dumps(header).encode()) + "." + p + "." + s

    def with_claims(self, changes):
        """The real token with its claims changed and its signature kept."""
        h, p, s = self.token.split(".")
        return h + "." + b64url(json.dumps(dict(self.claims, **changes)).encode()) + "." + s


def bearer(credential):
    return {"Authorization": b"Bearer " + (credential if isinstance(credential, bytes)
                                           else credential.encode())}


def flip_last(s):
    return s[:-1] + ("A" if s[-1] != "A" else "B")


NOW = int(time.time())

# name                                   status  headers (from Material m)
CORPUS = [
    ("alg none",                             401, lambda m: bearer(unsigned(m.token, {"alg": "none"}))),
    ("alg None",                             401, lambda m: bearer(unsigned(m.token, {"alg": "None"}))),
    ("alg NONE",                             401, lambda m: bearer(unsigned(m.token, {"alg": "NONE"}))),
    ("alg nOnE",                             401, lambda m: bearer(unsigned(m.token, {"alg": "nOnE"}))),
    ("alg none, signature kept",             401, lambda m: bearer(m.with_header({"alg": "none"}))),
    ("alg missing",                          401, lambda m: bearer(m.forge(header={"alg": None}))),
    ("alg ES256",                            401, lambda m: bearer(m.forge(header={"alg": "ES256"}))),
    ("HS256, public key bytes as secret",    401, lambda m: bearer(m.hs256(b64url_decode(m.jwk["x"])))),
    ("HS256, public key text as secret",     401, lambda m: bearer(m.hs256(m.jwk["x"].encode()))),
    ("HS256, public key PEM as secret",      401, lambda m: bearer(m.hs256(m.public_pem()))),
    ("unknown kid",                          401, lambda m: bearer(m.forge(header={"kid": "no-such-kid"}))),
    ("path-like kid",                        401, lambda m: bearer(m.forge(header={"kid": "../../etc/passwd"}))),
    ("kid with a NUL",                       401, lambda m: bearer(m.forge(header={"kid": m.header["kid"] + "\u0000x"}))),
    ("kid not a string",                     401, lambda m: bearer(m.forge(header={"kid": 7}))),
    ("jku header",                           401, lambda m: bearer(m.forge(header={"jku": "https://evil.example/jwks.json"}))),
    ("x5u header",                           401, lambda m: bearer(m.forge(header={"x5u": "https://evil.example/c.pem"}))),
    ("jwk header with the attacker's key",   401, lambda m: bearer(m.forge(header={"jwk": m.other_jwk()}, key=m.other))),
    ("crit header",                          401, lambda m: bearer(m.forge(header={"crit": ["exp"]}))),
    ("typ JWT",                              401, lambda m: bearer(m.forge(header={"typ": "JWT"}))),
    ("typ missing",                          401, lambda m: bearer(m.forge(header={"typ": None}))),
    ("wrong iss",                            401, lambda m: bearer(m.forge(claims={"iss": "someone-else"}))),
    ("wrong aud",                            401, lambda m: bearer(m.forge(claims={"aud": "other-api"}))),
    ("aud list without ours",                401, lambda m: bearer(m.forge(claims={"aud": ["a", "b"]}))),
    ("missing exp",                          401, lambda m: bearer(m.forge(drop=("exp",)))),
    ("exp as a string",                      401, lambda m: bearer(m.forge(claims={"exp": str(NOW + 600)}))),
    ("expired",                              401, lambda m: bearer(m.forge(claims={"iat": NOW - 7200, "exp": NOW - 3600}))),
    ("nbf in the future",                    401, lambda m: bearer(m.forge(claims={"nbf": NOW + 3600}))),
    ("iat in the future",                    401, lambda m: bearer(m.forge(claims={"iat": NOW + 3600, "exp": NOW + 7200}))),
    ("sub missing",                          401, lambda m: bearer(m.forge(drop=("sub",)))),
    ("role raised, old signature",           401, lambda m: bearer(m.with_claims({"role": "admin", "scope": "admin"}))),
    ("truncated signature",                  401, lambda m: bearer(m.token[:-10])),
    ("padded signature ==",                  401, lambda m: bearer(m.token + "==")),
    ("empty signature",                      401, lambda m: bearer(m.token.rsplit(".", 1)[0] + ".")),
    ("valid signature from another key",     401, lambda m: bearer(m.forge(key=m.other))),
    ("two segments",                         401, lambda m: bearer(m.token.rsplit(".", 1)[0])),
    ("four segments",                        401, lambda m: bearer(m.token + ".e30")),
    ("one segment",                          401, lambda m: bearer(m.token.split(".")[0])),
    ("base64 '+' and '/' characters",        401, lambda m: bearer(m.token.replace("-", "+").replace("_", "/") + "+/")),
    ("non-base64url characters",             401, lambda m: bearer("eyJ*.eyJ~." + m.token.split(".")[2])),
    ("token over 8 KiB",                     401, lambda m: bearer(m.forge(claims={"pad": "x" * 9000}))),
    ("duplicate keys in the header",         401, lambda m: bearer(m.raw(m.header_text()[:-1] + ',"alg":"none"}', m.claims_text()))),
    ("duplicate keys in the payload",        401, lambda m: bearer(m.raw(m.header_text(), m.claims_text()[:-1] + f',"sub":"{uuid.uuid4()}"}}'))),
    ("nested JSON bomb in the payload",      401, lambda m: bearer(m.raw(m.header_text(), m.claims_text()[:-1] + ',"x":' + "[" * 1500 + "]" * 1500 + "}"))),
    ("payload not an object",                401, lambda m: bearer(m.raw(m.header_text(), "[" + m.claims_text() + "]"))),
    ("API key, bad checksum",                401, lambda m: bearer(flip_last(m.key))),
    ("API key, bad checksum, X-API-Key",     401, lambda m: {"X-API-Key": flip_last(m.key)}),
    ("API key, truncated",                   401, lambda m: bearer(m.key[:-1])),
    ("API key, not base62",                  401, lambda m: bearer(m.key[:20] + "-" + m.key[21:])),
    ("X-API-Key holding a JWT",              401, lambda m: {"X-API-Key": m.token}),
    ("API key nobody minted",                401, lambda m: bearer(api_key())),
    ("API key, right id, wrong secret",      401, lambda m: bearer(api_key(key_id=m.key_id))),
    ("API key, revoked",                     401, lambda m: bearer(m.revoked_key)),
    ("API key, expired",                     401, lambda m: {"X-API-Key": m.expired_key}),
    ("API key of a disabled user",           401, lambda m: bearer(m.disabled_key)),
    ("API key beyond its scopes",            403, lambda m: dict(bearer(m.predict_only), path="/v1/admin/users")),
    ("Authorization: Bearer alone",          400, lambda m: {"Authorization": "Bearer"}),
    ("Authorization: Basic",                 400, lambda m: {"Authorization": "Basic dXNlcjpwYXNz"}),
    ("Authorization: two credentials",       400, lambda m: {"Authorization": "Bearer a b"}),
    ("Authorization: another scheme",        400, lambda m: {"Authorization": "Token " + m.token}),
    ("Authorization: non-ASCII credential",  400, lambda m: {"Authorization": ("Bearer " + "\u00e9" * 8).encode()}),
    ("Authorization and X-API-Key disagree", 400, lambda m: {**bearer(m.token), "X-API-Key": m.key}),
]


@pytest.fixture(scope="module")
def m(cluster, tokens, stack):
    return Material(cluster.api(), tokens, stack)


def refused_total(gateway):
    return metric_sum(gateway.metrics(), "cairn_authn_refused_total")


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 40
    assert len({name for name, _, _ in CORPUS}) == len(CORPUS), "case names must be unique"


def test_the_controls_are_accepted(m):
    # What the cases alter is accepted unaltered: re-signed copies, exact JSON texts
    # signed here, and the live key in either header. So each refusal is for its reason.
    assert m.api.me(m.forge()).status_code == 200
    assert m.api.me(m.raw(m.header_text(), m.claims_text())).status_code == 200
    assert m.api.me(m.key).status_code == 200
    assert m.api.me(api_key=m.key).status_code == 200
    r = m.api.get("/v1/auth/me", headers=bearer(m.predict_only))
    assert r.status_code == 200 and r.json()["scopes"] == ["predict"], r.text


@pytest.mark.parametrize("name,status,make", CORPUS, ids=[c[0] for c in CORPUS])
def test_forged_or_malformed_credential(m, cluster, name, status, make):
    headers = make(m)
    path = headers.pop("path", "/v1/auth/me")
    before = refused_total(cluster.gateway)
    r = m.api.get(path, headers=headers)
    assert_problem(r, status)
    challenge = r.headers.get("WWW-Authenticate", "")
    if status == 401:
        assert 'error="invalid_token"' in challenge, challenge
    if status == 400:
        assert 'error="invalid_request"' in challenge, challenge
    bumped = refused_total(cluster.gateway) - before
    assert bumped == (1 if status == 401 else 0), (
        f"cairn_authn_refused_total grew by {bumped} for a {status}")
    assert cluster.gateway.alive() and all(a.alive() for a in cluster.auths)


def test_everything_still_works_after_the_corpus(m, cluster):
    assert cluster.gateway.alive() and cluster.auth.alive()
    assert m.api.me(m.token).status_code == 200
    assert m.api.me(m.key).status_code == 200
    assert m.api.me(api_key=m.key).status_code == 200


# ---------------------------------------------------------------- SQL metacharacters

def test_sql_metacharacters_are_data(api, cluster):
    admin = api.admin()
    tag = uuid.uuid4().hex[:10]
    for s in SQL:
        # Email: where the text is a valid local part it is stored verbatim (lowercased);
        # where it is not (spaces, '"'), it is a 400 on email, never a 500.
        email = f"{s}{tag}@example.com"
        valid = " " not in s and '"' not in s
        r = api.register(email, PASSWORD)
        if valid:
            assert r.status_code == 201, (s, r.text)
            assert r.json()["email"] == email.lower(), (s, r.json())
            assert api.login(email).status_code == 200
            found = api.list_users(admin.access, email=f"{s}{tag}").json()["users"]
            assert [u["email"] for u in found] == [email.lower()], (s, found)
        else:
            assert_problem(r, 400, field="email")
            assert_problem(api.login(email), 401)
            assert api.list_users(admin.access, email=s).status_code == 200

        # Password: any text of 12+ characters is a password, compared exactly.
        password = s + " padding to twelve"
        u_email = unique_email("sqlpw")
        assert api.register(u_email, password).status_code == 201, s
        r = api.login(u_email, password)
        assert r.status_code == 200, (s, r.text)
        access = r.json()["access_token"]
        assert_problem(api.login(u_email, s), 401)
        assert_problem(api.login(u_email, PASSWORD), 401)

        # API key name: stored and listed verbatim.
        created = api.new_key(access, name=s)
        assert created["key"]["name"] == s
        names = [k["name"] for k in api.list_keys(access).json()["keys"]]
        assert names == [s], (s, names)

        # Self-service with metacharacters.
        assert_problem(api.change_password(access, s, PASSWORD + " x"), 401)
        assert_problem(api.change_password(access, password, s[:11]), 400, field="new_password")
        assert api.change_password(access, password, password + s).status_code == 204
        assert api.login(u_email, password + s).status_code == 200

        # Page tokens and filters: a field error, never a SQL one.
        assert_problem(api.list_users(admin.access, page_token=s), 400, field="page_token")
        assert_problem(api.list_keys(access, page_token=s), 400, field="page_token")
        assert_problem(api.list_audit(admin.access, page_token=s), 400, field="page_token")
        assert_problem(api.list_audit(admin.access, subject=s), 400, field="subject")
        assert_problem(api.list_audit(admin.access, action=s), 400, field="action")

        # Ids in paths and opaque tokens.
        r = api.revoke_key(access, s)
        assert r.status_code in (400, 404), (s, r.status_code, r.text)
        assert_problem(r, r.status_code)
        assert_problem(api.update_user(admin.access, s, disabled=True), 404)
        assert_problem(api.update_user(admin.access, created["key"]["id"], role=s), 400, field="role")
        assert_problem(api.refresh(s), 401)
        assert api.logout(s).status_code == 204

    # The users table is still there and still works.
    u = api.new_user("after-sql")
    assert api.me(u.access).status_code == 200
    found = api.list_users(admin.access, email=u.email).json()["users"]
    assert [x["id"] for x in found] == [u.id]
    assert cluster.auth.alive()


# ---------------------------------------------------------------- the refresh race

def test_concurrent_refreshes_leave_the_family_consistent(api, stack):
    u = api.new_user("race")
    r0 = u.refresh
    barrier = threading.Barrier(2)
    results = [None, None]

    def refresh(i):
        own = Api(api.base)  # one connection each, so the two really overlap
        barrier.wait()
        results[i] = own.refresh(r0)

    threads = [threading.Thread(target=refresh, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    statuses = sorted(r.status_code for r in results)
    assert statuses in ([200, 200], [200, 401]), [r.text for r in results]
    returned = [r.json()["refresh_token"] for r in results if r.status_code == 200]
    assert len(set(returned)) == len(returned), "two refreshes returned the same token"
    for r in results:
        if r.status_code == 200:
            assert api.me(r.json()["access_token"]).status_code == 200

    # Exactly one token of the family is live, and it is one of those returned. (Read from
    # the database: presenting a token to find out would rotate it.)
    digest = hashlib.sha256(r0.encode()).hexdigest()
    live = stack.sql("SELECT encode(t.token_hash, 'hex') FROM auth.refresh_tokens t "
                     "JOIN auth.refresh_families f ON f.id = t.family_id "
                     "WHERE t.rotated_at IS NULL AND f.revoked_at IS NULL AND t.family_id = "
                     "(SELECT family_id FROM auth.refresh_tokens WHERE token_hash = "
                     "decode(:'v1', 'hex'))", digest)
    hashes = {hashlib.sha256(t.encode()).hexdigest(): t for t in returned}
    assert len(live) == 1, f"live tokens in the family: {live}"
    assert live[0][0] in hashes, "the live token is not one the racers got"
    survivor = hashes[live[0][0]]

    # It keeps working ...
    r = api.refresh(survivor)
    assert r.status_code == 200, r.text
    newest = r.json()["refresh_token"]
    # ... and a later reuse of the original revokes the whole family.
    assert_problem(api.refresh(r0), 401)
    assert_problem(api.refresh(newest), 401)
    for t in returned:
        assert_problem(api.refresh(t), 401)
