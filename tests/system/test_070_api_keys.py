"""API keys through the gateway: minted once with their secret, listed without it, used
as a bearer or in X-API-Key, held to their scopes and to a signed-in session for what a
key must not do, and refused within seconds of being revoked or of their owner being
disabled (auth publishes the revocation; the gateway's cache would otherwise trust a key
for CAIRN_APIKEY_CACHE_MS, 10 s). A mistyped key is refused by its checksum at the edge,
without asking auth."""

import time

from cairn import (API_KEY_RE, api_key, as_int, assert_problem, metric_sum, wait_until)

USER_SCOPES = {"models:read", "models:write", "predict", "jobs:read", "jobs:write",
               "features:read", "features:write", "costs:read"}
REVOCATION_S = 2  # a revoked key must stop working this fast


def key_me(api, secret, header="bearer"):
    if header == "bearer":
        return api.me(secret)
    return api.me(api_key=secret)


def refused_within(api, credential, seconds, **kw):
    """Waits until credential is refused with 401; returns how long it took."""
    t0 = time.monotonic()
    wait_until(lambda: api.me(credential, **kw).status_code == 401, timeout=seconds,
               interval=0.02, what="the credential to be refused")
    r = api.me(credential, **kw)
    assert_problem(r, 401)
    assert "invalid_token" in r.headers.get("WWW-Authenticate", "")
    return time.monotonic() - t0


def resolve_calls(auth):
    return metric_sum(auth.metrics(), "cairn_rpc_calls_total", method="ResolveApiKey")


def test_create_shows_the_secret_once_and_lists_without_it(api, user):
    t0 = time.time()
    created = api.new_key(user.access, name="ci deploy", scopes=["predict", "models:read"],
                          expires_in_days=30)
    assert set(created) == {"key", "secret"}, created
    secret, key = created["secret"], created["key"]
    assert secret.startswith("cairn_") and len(secret) == 57, secret
    assert API_KEY_RE.match(secret), secret
    assert secret[6:18] == key["id"]
    assert key["prefix"] == "cairn_" + key["id"] and secret.startswith(key["prefix"] + "_")
    assert key["name"] == "ci deploy"
    assert set(key["scopes"]) == {"predict", "models:read"}
    created_at = as_int(key["created_at"])
    assert abs(created_at / 1000 - t0) < 60
    assert as_int(key["last_used_at"]) == 0
    assert abs(as_int(key["expires_at"]) - created_at - 30 * 86400 * 1000) < 60_000

    r = api.list_keys(user.access)
    assert r.status_code == 200, r.text
    listed = {k["id"]: k for k in r.json()["keys"]}
    assert key["id"] in listed
    assert listed[key["id"]] == key
    # The secret is nowhere in the list, whole or in part.
    assert secret not in r.text and secret[19:51] not in r.text
    assert "secret" not in r.json()["keys"][0]


def test_key_works_as_bearer_and_as_x_api_key(api, user):
    created = api.new_key(user.access, scopes=["predict"])
    secret, key_id = created["secret"], created["key"]["id"]
    for header in ("bearer", "x-api-key"):
        r = key_me(api, secret, header)
        assert r.status_code == 200, (header, r.text)
        me = r.json()
        assert me["id"] == user.id and me["email"] == user.email, me
        assert me["scopes"] == ["predict"], me
        assert me["key_id"] == key_id, me
    # The same key in both headers is one credential, not a conflict.
    r = api.get("/v1/auth/me", headers={"Authorization": f"Bearer {secret}", "X-API-Key": secret})
    assert r.status_code == 200, r.text
    # An access token names its role's scopes and no key.
    me = api.me(user.access).json()
    assert set(me["scopes"]) == USER_SCOPES and me["key_id"] == "", me


def test_empty_scopes_mean_all_of_the_role(api, user):
    created = api.new_key(user.access)
    assert set(created["key"]["scopes"]) == USER_SCOPES, created
    assert set(api.me(created["secret"]).json()["scopes"]) == USER_SCOPES


def test_a_key_cannot_mint_keys_change_passwords_or_end_sessions(api, user):
    secret = api.new_key(user.access)["secret"]
    assert_problem(api.create_key(secret), 403)
    r = api.post("/v1/auth/api-keys", {"name": "via header"}, headers={"X-API-Key": secret})
    assert_problem(r, 403)
    assert_problem(api.change_password(secret, user.password, user.password + "!"), 403)
    assert_problem(api.logout_all(secret), 403)
    # ... and nothing happened: the password and the sessions are as they were.
    assert api.refresh(user.refresh).status_code == 200
    assert api.login(user.email).status_code == 200


def test_scopes_are_checked(api, user):
    body = assert_problem(api.create_key(user.access, scopes=["predict", "admin"]), 403)
    assert "admin" in body["detail"], body
    assert_problem(api.create_key(user.access, scopes=["predict", "teleport"]), 400,
                   field="scopes[1]")
    assert_problem(api.create_key(user.access, name=""), 400, field="name")
    assert_problem(api.create_key(user.access, name="x" * 101), 400, field="name")
    assert_problem(api.create_key(user.access, expires_in_days=-1), 400, field="expires_in_days")
    assert_problem(api.create_key(user.access, expires_in_days=3651), 400, field="expires_in_days")
    assert api.create_key(user.access, name="x" * 100, expires_in_days=3650).status_code == 201


def test_expiry_is_listed(api, user):
    now_ms = time.time() * 1000
    day = api.new_key(user.access, name="one day", expires_in_days=1)["key"]
    never = api.new_key(user.access, name="forever", expires_in_days=0)["key"]
    assert abs(as_int(day["expires_at"]) - now_ms - 86400_000) < 60_000, day
    assert as_int(never["expires_at"]) == 0, never
    listed = {k["id"]: k for k in api.list_keys(user.access).json()["keys"]}
    assert as_int(listed[day["id"]]["expires_at"]) == as_int(day["expires_at"])
    assert as_int(listed[never["id"]]["expires_at"]) == 0


def test_revoked_key_stops_working_at_once_even_when_cached(api, cluster, user):
    created = api.new_key(user.access)
    secret, key_id = created["secret"], created["key"]["id"]
    # Used twice: the gateway has it cached now, for 10 s.
    assert api.me(secret).status_code == 200
    assert api.me(api_key=secret).status_code == 200
    events = metric_sum(cluster.gateway.metrics(), "cairn_revocation_events_total", kind="revoke-key")
    r = api.revoke_key(user.access, key_id)
    assert r.status_code == 204, r.text
    took = refused_within(api, secret, REVOCATION_S)
    assert took < REVOCATION_S
    refused_within(api, None, REVOCATION_S, api_key=secret)
    after = metric_sum(cluster.gateway.metrics(), "cairn_revocation_events_total", kind="revoke-key")
    assert after >= events + 1, "the gateway heard no revocation event"
    assert key_id not in {k["id"] for k in api.list_keys(user.access).json()["keys"]}
    # Revoked is gone: again is 404.
    assert_problem(api.revoke_key(user.access, key_id), 404)


def test_others_cannot_revoke_my_key(api, user):
    created = api.new_key(user.access)
    other = api.new_user("other")
    assert_problem(api.revoke_key(other.access, created["key"]["id"]), 404)
    other_key = api.new_key(other.access)["secret"]
    # A key may revoke only itself.
    assert_problem(api.revoke_key(other_key, created["key"]["id"]), 403)
    assert api.me(created["secret"]).status_code == 200


def test_a_key_can_revoke_itself(api, user):
    created = api.new_key(user.access)
    r = api.revoke_key(created["secret"], created["key"]["id"])
    assert r.status_code == 204, r.text
    refused_within(api, created["secret"], REVOCATION_S)


def test_key_of_a_disabled_user_stops_working(api, user):
    admin = api.admin()
    secret = api.new_key(user.access)["secret"]
    assert api.me(secret).status_code == 200  # cached now
    r = api.update_user(admin.access, user.id, disabled=True)
    assert r.status_code == 200, r.text
    refused_within(api, secret, REVOCATION_S)
    # Re-enabling the user does not bring the key back.
    assert api.update_user(admin.access, user.id, disabled=False).status_code == 200
    assert_problem(api.me(secret), 401)


def test_bad_checksum_is_refused_without_asking_auth(api, cluster, user):
    secret = api.new_key(user.access)["secret"]
    flip = {c: ("A" if c != "A" else "B") for c in secret}
    mistyped = [
        secret[:-1] + flip[secret[-1]],              # the check itself
        secret[:30] + flip[secret[30]] + secret[31:],  # a secret character
        secret[:8] + flip[secret[8]] + secret[9:],    # an id character
        secret[:-1],                                  # truncated
        secret + "0",                                 # one too many
        secret.replace("cairn_", "cairn-", 1)[:6] + secret[6:],
    ]
    before = resolve_calls(cluster.auth)
    for bad in mistyped:
        assert_problem(api.me(bad), 401)
        assert_problem(api.me(api_key=bad), 401)
    assert resolve_calls(cluster.auth) == before, "a mistyped key reached auth"
    # The counter is the right one: a well-formed key nobody minted does reach auth.
    assert_problem(api.me(api_key()), 401)
    wait_until(lambda: resolve_calls(cluster.auth) > before, timeout=2, what="ResolveApiKey counted")


def test_last_used_at_is_recorded(new_cluster):
    # A private cluster whose auth writes last_used_at every second instead of every 30.
    c = new_cluster(auth_env={"CAIRN_AUTH_LAST_USED_FLUSH_S": "1"})
    api = c.api()
    u = api.new_user("lastused")
    created = api.new_key(u.access)
    key_id = created["key"]["id"]
    t0 = time.time() * 1000
    assert api.me(created["secret"]).status_code == 200

    def last_used():
        keys = {k["id"]: k for k in api.list_keys(u.access).json()["keys"]}
        return as_int(keys[key_id]["last_used_at"])

    used = wait_until(last_used, timeout=5, interval=0.2, what="last_used_at to be written")
    assert abs(used - t0) < 60_000, (used, t0)
