"""Access tokens at the edge: the gateway accepts a correctly signed token with the right
claims and refuses every altered one with 401. Altered tokens are made from a real one
and re-signed with the service's own key (the harness gave it the PEM), so each case
differs from a valid token in exactly one way; the first test proves that re-signing an
unchanged token is accepted, which is what makes the refusals meaningful."""

import hashlib
import hmac
import json
import time

import pytest

from cairn import (Tokens, as_int, assert_problem, b64url, b64url_decode, jwt_parts,
                   unsigned)


@pytest.fixture
def token(user):
    return user.access


def refused(api, tok):
    r = api.me(tok)
    assert_problem(r, 401)


def test_real_token_has_the_promised_shape(api, token, user):
    header, claims, sig = jwt_parts(token)
    assert header["alg"] == "EdDSA"
    assert header["typ"].lower() == "at+jwt"
    kids = [k["kid"] for k in api.jwks().json()["keys"]]
    assert header["kid"] in kids
    assert claims["iss"] == "cairn" and claims["aud"] in ("cairn-api", ["cairn-api"])
    assert claims["sub"] == user.id
    assert claims["role"] == "user"
    assert claims["jti"]
    now = time.time()
    iat, exp = as_int(claims["iat"]), as_int(claims["exp"])
    assert abs(iat - now) < 60
    assert abs(exp - iat - as_int(user.tokens["expires_in"])) <= 1
    assert len(b64url_decode(sig)) == 64


def test_resigned_unchanged_token_is_accepted(api, tokens, token, user):
    r = api.me(tokens.forge(token))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == user.id


def test_flipped_signature_char_is_401(api, token):
    h, p, s = token.split(".")
    i = len(s) // 2
    flipped = s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1:]
    refused(api, f"{h}.{p}.{flipped}")


def test_altered_payload_with_old_signature_is_401(api, token):
    h, p, s = token.split(".")
    claims = json.loads(b64url_decode(p))
    claims["role"] = "admin"
    refused(api, h + "." + b64url(json.dumps(claims, separators=(",", ":")).encode()) + "." + s)


def test_expired_token_is_401(api, tokens, token):
    now = int(time.time())
    refused(api, tokens.forge(token, claim_changes={"iat": now - 7200, "exp": now - 3600}))


def test_not_yet_valid_token_is_401(api, tokens, token):
    now = int(time.time())
    refused(api, tokens.forge(token, claim_changes={"nbf": now + 3600}))


def test_token_without_exp_is_401(api, tokens, token):
    refused(api, tokens.forge(token, drop=("exp",)))


def test_alg_none_is_401(api, token):
    refused(api, unsigned(token, {"alg": "none"}))
    refused(api, unsigned(token, {"alg": "None"}))
    h, p, s = token.split(".")
    header = json.loads(b64url_decode(h))
    header["alg"] = "none"
    refused(api, b64url(json.dumps(header).encode()) + "." + p + "." + s)


def test_hs256_with_the_public_key_as_secret_is_401(api, token):
    header, claims, _ = jwt_parts(token)
    jwk = next(k for k in api.jwks().json()["keys"] if k["kid"] == header["kid"])
    header["alg"] = "HS256"
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    for secret in (b64url_decode(jwk["x"]), jwk["x"].encode()):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        refused(api, signing_input + "." + b64url(mac))


def test_wrong_audience_is_401(api, tokens, token):
    refused(api, tokens.forge(token, claim_changes={"aud": "other-api"}))
    refused(api, tokens.forge(token, claim_changes={"aud": ["other-api"]}))
    refused(api, tokens.forge(token, drop=("aud",)))


def test_wrong_issuer_is_401(api, tokens, token):
    refused(api, tokens.forge(token, claim_changes={"iss": "someone-else"}))
    refused(api, tokens.forge(token, drop=("iss",)))


def test_wrong_typ_is_401(api, tokens, token):
    refused(api, tokens.forge(token, header_changes={"typ": "JWT"}))


def test_token_signed_by_another_key_is_401(api, tokens, token):
    other = Tokens.other_key()
    refused(api, tokens.forge(token, key=other))
    refused(api, tokens.forge(token, header_changes={"kid": "no-such-kid"}, key=other))
    refused(api, tokens.forge(token, header_changes={"kid": None}, key=other))


def test_garbage_authorization_is_401(api, token):
    for value in ("Bearer a.b.c", "Bearer ...", "Bearer " + "x" * 4000,
                  "Bearer " + token + ".extra", "Bearer " + token[:-10],
                  "Bearer eyJ!!!.eyJ!!!.sig"):
        r = api.me(authorization=value.encode("utf-8"))
        assert_problem(r, 401)


def test_malformed_authorization_header_is_400(api, token):
    # Not of the form "Bearer <credential>": RFC 6750 invalid_request, 400.
    for value in ("Bearer", "Bearer ", "Bearer  ", "Basic dXNlcjpwYXNz", "bearer-ish",
                  f"Token {token}", "Bearer " + "\u00e9" * 10, "Bearer a b"):
        r = api.me(authorization=value.encode("utf-8"))
        assert_problem(r, 400)
        assert "invalid_request" in r.headers.get("WWW-Authenticate", "")


def test_the_right_token_still_works_after_the_refusals(api, token):
    assert api.me(token).status_code == 200
