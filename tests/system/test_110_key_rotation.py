"""Signing-key rotation (issue 3): `cairn-auth rotate-keys` publishes the next key in JWKS
before it signs anything; tokens signed before the switch carry the old kid and keep
working; from the switch every replica signs with the new key, which the gateway already
knows; the old key leaves JWKS (and the database) once every token it signed has expired,
and the gateway follows all of it without a restart.

Two auth replicas keeping their keys in Postgres (no CAIRN_AUTH_KEY_FILE), with the times
shrunk so the story takes about ten seconds: a new key is published 2 s before it signs,
replicas reload keys every second, access tokens live 5 s, a retired key stays published
1 s after its last token expired, and the gateway refreshes JWKS every second."""

import datetime
import re
import time

from cairn import jwt_parts, metric_sum, wait_until

PUBLISH_S = 2
TTL_S = 5
GRACE_S = 1
AUTH_ENV = {
    "CAIRN_AUTH_KEY_FILE": None,
    "CAIRN_AUTH_KEY_PUBLISH_S": str(PUBLISH_S),
    "CAIRN_AUTH_KEY_RELOAD_S": "1",
    "CAIRN_AUTH_ACCESS_TTL_S": str(TTL_S),
    "CAIRN_AUTH_KEY_GRACE_S": str(GRACE_S),
}
GATEWAY_ENV = {"CAIRN_JWKS_REFRESH_S": "1"}
ROTATED = re.compile(r"^next key (\S+) publishes now, signs from (\S+); key (\S+) retires then$")


def kids(api):
    r = api.jwks()
    assert r.status_code == 200, r.text
    return {k["kid"] for k in r.json()["keys"]}


def kid_of(token):
    return jwt_parts(token)[0]["kid"]


def login_kids(api, user, n=4):
    """The kids of n fresh logins (spread over the replicas), and the last token."""
    seen, token = set(), None
    for _ in range(n):
        r = api.login(user.email)
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        seen.add(kid_of(token))
    return seen, token


def test_rotation_without_restart(new_cluster, stack):
    c = new_cluster(replicas=2, auth_env=AUTH_ENV, gateway_env=GATEWAY_ENV)
    api = c.api()
    (old,) = kids(api)  # the key the first replica made at start-up, shared by both
    u = api.new_user("rotation")
    assert kid_of(u.access) == old

    r = c.auth.command("rotate-keys")
    assert r.returncode == 0, r.stderr
    m = ROTATED.match(r.stdout.strip())
    assert m, r.stdout
    new, retired = m.group(1), m.group(3)
    activates = datetime.datetime.fromisoformat(m.group(2).replace("Z", "+00:00")).timestamp()
    assert retired == old and new != old
    assert activates - time.time() > PUBLISH_S - 1, (m.group(2), time.time())

    # Before the switch: the old key signs, and both are published by every replica.
    seen, before_switch = login_kids(api, u)
    assert time.time() < activates, "too slow to observe the publish period"
    assert seen == {old}
    wait_until(lambda: all(metric_sum(a.metrics(), "cairn_auth_signing_keys") == 2
                           for a in c.auths), timeout=3, what="both replicas to load the new key")
    assert kids(api) == {old, new}
    assert api.me(before_switch).status_code == 200

    # From the switch: every replica signs with the new key, which the gateway accepts,
    # and tokens of the old one keep working until they expire.
    time.sleep(max(0.0, activates - time.time()) + 0.1)
    seen, after_switch = login_kids(api, u)
    assert seen == {new}
    assert api.me(after_switch).status_code == 200
    exp = jwt_parts(before_switch)[1]["exp"]
    assert time.time() < exp
    assert api.me(before_switch).status_code == 200
    assert kids(api) == {old, new}

    # The old key leaves JWKS when its last token has expired (plus the grace), not before.
    gone = wait_until(lambda: old not in kids(api) and time.time(),
                      timeout=activates + TTL_S + GRACE_S + 3 - time.time(), interval=0.1,
                      what="the old key to leave JWKS")
    assert gone >= activates + TTL_S + GRACE_S - 0.5, (gone, activates)
    assert kids(api) == {new}
    # The gateway drops it too (a token of that key is refused even within the gateway's
    # clock leeway), and the row is deleted.
    wait_until(lambda: api.me(before_switch).status_code == 401, timeout=3,
               what="the gateway to drop the old key")
    wait_until(lambda: stack.sql("SELECT count(*) FROM auth.signing_keys WHERE kid = :'v1'",
                                 old) == [["0"]], timeout=3, what="the old key's row to go")
    assert api.me(after_switch).status_code == 200

    admin = api.admin()
    events = api.list_audit(admin.access, action="signing_key.rotated").json()["events"]
    assert any(e["detail"] == r.stdout.strip() for e in events), events


def test_rotate_keys_refuses_when_the_key_is_a_file(cluster):
    r = cluster.auth.command("rotate-keys")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "CAIRN_AUTH_KEY_FILE" in r.stderr
    assert r.stdout == ""
