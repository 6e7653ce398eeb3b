"""Roles and administration: the bootstrap admin, admin-only routes, listing users (a
literal email filter, cursor pages), changing a role, disabling a user (its sessions,
access tokens and keys stop working within seconds; re-enabling lets it sign in again),
the audit log, changing one's password and ending every session."""

import uuid

from cairn import ADMIN_EMAIL, PASSWORD, as_int, assert_problem, jwt_parts, wait_until

REVOCATION_S = 2


def refused_within(api, access, seconds):
    wait_until(lambda: api.me(access).status_code == 401, timeout=seconds, interval=0.02,
               what="the credential to be refused")
    assert_problem(api.me(access), 401)


def register_all(api, emails):
    """Registers each email (asserting 201); returns their ids, in order."""
    ids = []
    for e in emails:
        r = api.register(e)
        assert r.status_code == 201, (e, r.text)
        ids.append(r.json()["id"])
    return ids


def listed(api, admin, email, **kw):
    r = api.list_users(admin.access, email=email, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def new_admin(api, admin):
    """A fresh user promoted to admin, signed in again so its token says so."""
    u = api.new_user("admin2")
    assert api.update_user(admin.access, u.id, role="admin").status_code == 200
    u.tokens = api.login(u.email).json()
    return u


def test_bootstrap_admin_is_an_admin(api):
    admin = api.admin()
    assert admin.record["email"] == ADMIN_EMAIL
    assert admin.record["role"] == "admin"
    assert "admin" in admin.record["scopes"], admin.record
    _, claims, _ = jwt_parts(admin.access)
    assert claims["role"] == "admin"
    assert "admin" in claims["scope"].split(), claims
    assert listed(api, admin, ADMIN_EMAIL)["users"][0]["email"] == ADMIN_EMAIL


def test_admin_routes_refuse_everyone_else(api, user):
    admin = api.admin()
    key = api.new_key(user.access)["secret"]
    for cred in (user.access, key):
        assert_problem(api.list_users(cred), 403)
        assert_problem(api.update_user(cred, user.id, role="admin"), 403)
        assert_problem(api.update_user(cred, admin.id, disabled=True), 403)
        assert_problem(api.list_audit(cred), 403)
    for cred in (None, "not-a-token"):
        assert_problem(api.list_users(cred), 401)
    # The user's token does not carry the admin scope.
    assert "admin" not in jwt_parts(user.access)[1]["scope"].split()
    assert api.me(user.access).json()["role"] == "user"


def test_email_filter_is_literal(api):
    admin = api.admin()
    tag = uuid.uuid4().hex[:12]
    emails = [f"u{tag}_1@example.com", f"u{tag}x1@example.com",
              f"u{tag}%2@example.com", f"u{tag}ab2@example.com",
              f"u{tag}\\3@example.com", f"u{tag}3@example.com"]
    ids = dict(zip(emails, register_all(api, emails)))

    def emails_for(text):
        return {u["email"] for u in listed(api, admin, text)["users"]}

    assert emails_for(tag) == set(emails)
    assert emails_for(f"{tag}_1") == {emails[0]}        # _ is not "any character"
    assert emails_for(f"{tag}%2") == {emails[2]}        # % is not "anything"
    assert emails_for(f"{tag}\\3") == {emails[4]}       # \ is not an escape
    assert emails_for(f"{tag}\\") == {emails[4]}
    assert emails_for(f"U{tag.upper()}_1") == {emails[0]}  # case-insensitive
    assert emails_for(f"{tag}%") == {emails[2]}
    assert emails_for(f"{tag}nothing") == set()
    users = {u["email"]: u for u in listed(api, admin, tag)["users"]}
    for e in emails:
        assert users[e]["id"] == ids[e] and users[e]["role"] == "user"
        assert users[e]["disabled"] is False


def test_pages_have_no_duplicates_and_no_gaps(api):
    admin = api.admin()
    tag = uuid.uuid4().hex[:12]
    ids = register_all(api, [f"page{i}-{tag}@example.com" for i in range(5)])
    seen, sizes, token, pages = [], [], None, 0
    while True:
        body = listed(api, admin, tag, limit=2, page_token=token)
        sizes.append(len(body["users"]))
        seen += body["users"]
        token = body["next_page_token"]
        pages += 1
        assert pages <= 5, "pagination does not end"
        if not token:
            break
    assert sizes == [2, 2, 1], sizes
    got = [u["id"] for u in seen]
    assert len(got) == len(set(got)), f"duplicates: {got}"
    assert set(got) == set(ids)
    # Newest first.
    assert got == list(reversed(ids)), (got, ids)
    created = [as_int(u["created_at"]) for u in seen]
    assert created == sorted(created, reverse=True)
    # A page that holds exactly the rest says there is no next one.
    body = listed(api, admin, tag, limit=5)
    assert len(body["users"]) == 5 and body["next_page_token"] == ""

    assert_problem(api.list_users(admin.access, page_token="garbage"), 400, field="page_token")
    assert_problem(api.list_users(admin.access, limit=101), 400, field="limit")
    assert_problem(api.list_users(admin.access, limit=-1), 400, field="limit")


def test_role_change_to_admin_and_back(api, user):
    admin = api.admin()
    r = api.update_user(admin.access, user.id, role="admin")
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "admin" and r.json()["id"] == user.id
    tokens = api.login(user.email).json()
    assert "admin" in jwt_parts(tokens["access_token"])[1]["scope"].split()
    assert api.list_users(tokens["access_token"], limit=1).status_code == 200

    r = api.update_user(admin.access, user.id, role="user")
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "user"
    # The demoted admin's unexpired admin token no longer works on admin routes.
    assert_problem(api.list_users(tokens["access_token"], limit=1), 403)
    tokens = api.login(user.email).json()
    assert_problem(api.list_users(tokens["access_token"], limit=1), 403)

    assert_problem(api.update_user(admin.access, user.id, role="root"), 400, field="role")
    assert_problem(api.update_user(admin.access, str(uuid.uuid4()), role="user"), 404)
    assert_problem(api.update_user(admin.access, "not-a-user-id", role="user"), 404)


def test_disabling_a_user_ends_everything_and_enabling_lets_it_back(api, user):
    admin = api.admin()
    other_session = api.login(user.email).json()
    key = api.new_key(user.access)["secret"]
    assert api.me(user.access).status_code == 200
    assert api.me(key).status_code == 200  # cached by the gateway now

    r = api.update_user(admin.access, user.id, disabled=True)
    assert r.status_code == 200, r.text
    assert r.json()["disabled"] is True
    refused_within(api, user.access, REVOCATION_S)
    refused_within(api, other_session["access_token"], REVOCATION_S)
    refused_within(api, key, REVOCATION_S)
    assert_problem(api.refresh(user.refresh), 401)
    assert_problem(api.refresh(other_session["refresh_token"]), 401)
    assert_problem(api.login(user.email), 401)
    assert listed(api, admin, user.email)["users"][0]["disabled"] is True

    r = api.update_user(admin.access, user.id, disabled=False)
    assert r.status_code == 200, r.text
    assert r.json()["disabled"] is False
    r = api.login(user.email)
    assert r.status_code == 200, r.text
    fresh = r.json()
    r = api.me(fresh["access_token"])
    assert r.status_code == 200, f"a re-enabled user's new token is refused: {r.text}"
    assert api.refresh(fresh["refresh_token"]).status_code == 200
    # What was revoked stays revoked.
    assert_problem(api.me(key), 401)
    assert_problem(api.refresh(other_session["refresh_token"]), 401)


def test_an_admin_cannot_disable_or_demote_itself(api):
    second = new_admin(api, api.admin())
    assert_problem(api.update_user(second.access, second.id, disabled=True), 412)
    assert_problem(api.update_user(second.access, second.id, role="user"), 412)
    me = api.me(second.access).json()
    assert me["role"] == "admin" and me["disabled"] is False
    # Changing nothing about itself, or keeping admin, is fine.
    r = api.update_user(second.access, second.id, role="admin", disabled=False)
    assert r.status_code == 200, r.text


def test_audit_log_records_who_did_what(api):
    admin = api.admin()
    u = api.new_user("audited")
    rid = f"audit-{uuid.uuid4().hex[:12]}"

    def with_rid(step):
        return {"X-Request-Id": f"{rid}-{step}"}

    assert api.post("/v1/auth/login", {"email": u.email, "password": "wrong password!"},
                    headers=with_rid("failed")).status_code == 401
    r = api.post("/v1/auth/login", {"email": u.email, "password": PASSWORD}, headers=with_rid("ok"))
    assert r.status_code == 200
    access = r.json()["access_token"]
    r = api.post("/v1/auth/api-keys", {"name": "audited"},
                 headers={"Authorization": f"Bearer {access}", **with_rid("created")})
    assert r.status_code == 201, r.text
    key_id, secret = r.json()["key"]["id"], r.json()["secret"]
    r = api.delete(f"/v1/auth/api-keys/{key_id}",
                   headers={"Authorization": f"Bearer {access}", **with_rid("revoked")})
    assert r.status_code == 204, r.text
    r = api.patch(f"/v1/admin/users/{u.id}", {"role": "admin"},
                  headers={"Authorization": f"Bearer {admin.access}", **with_rid("updated")})
    assert r.status_code == 200, r.text
    r = api.post("/v1/auth/password", {"current_password": PASSWORD,
                                       "new_password": PASSWORD + " 2"},
                 headers={"Authorization": f"Bearer {access}", **with_rid("password")})
    assert r.status_code == 204, r.text

    r = api.list_audit(admin.access, subject=u.id, limit=200)
    assert r.status_code == 200, r.text
    events = r.json()["events"]
    by_action = {}
    for e in events:
        assert e["subject"] == u.id, e
        assert e["ip"], e
        assert as_int(e["at"]) > 0 and e["id"], e
        by_action.setdefault(e["action"], []).append(e)
    want = {"login.failed": ("failed", ""), "login.ok": ("ok", None),
            "api_key.created": ("created", u.id), "api_key.revoked": ("revoked", u.id),
            "user.updated": ("updated", admin.id), "password.changed": ("password", u.id)}
    for action, (step, actor) in want.items():
        assert action in by_action, f"no {action} in {sorted(by_action)}"
        e = by_action[action][0]
        assert e["request_id"] == f"{rid}-{step}", e
        if actor is not None:
            assert e["actor"] == actor, e
        assert "127.0.0.1" in e["ip"], e
    assert key_id in by_action["api_key.created"][0]["detail"]
    for e in events:  # never a secret
        assert PASSWORD not in e["detail"] and secret[19:] not in e["detail"], e

    # Filters: by action (with and without subject), and pages.
    r = api.list_audit(admin.access, subject=u.id, action="login.failed")
    assert [e["action"] for e in r.json()["events"]] == ["login.failed"], r.text
    r = api.list_audit(admin.access, action="api_key.revoked", limit=10)
    got = r.json()["events"]
    assert got and all(e["action"] == "api_key.revoked" for e in got), r.text
    first = api.list_audit(admin.access, subject=u.id, limit=2).json()
    assert len(first["events"]) == 2 and first["next_page_token"]
    second = api.list_audit(admin.access, subject=u.id, limit=2,
                            page_token=first["next_page_token"]).json()
    ids = [e["id"] for e in first["events"] + second["events"]]
    assert len(set(ids)) == len(ids) == 4
    assert ids == [e["id"] for e in events[:4]]
    assert_problem(api.list_audit(admin.access, subject="nobody"), 400, field="subject")
    assert_problem(api.list_audit(admin.access, action="DROP TABLE"), 400, field="action")


def test_change_password(api):
    u = api.new_user("passwd")
    other = api.login(u.email).json()
    new = PASSWORD + " but longer"
    assert_problem(api.change_password(u.access, "not my password", new), 401)
    assert_problem(api.change_password(u.access, PASSWORD, "short"), 400, field="new_password")
    assert_problem(api.change_password(u.access, PASSWORD, ""), 400, field="new_password")
    # Nothing changed by the refusals.
    assert api.refresh(other["refresh_token"]).status_code == 200
    other = api.login(u.email).json()

    r = api.change_password(u.access, PASSWORD, new)
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_problem(api.refresh(other["refresh_token"]), 401)
    assert_problem(api.login(u.email, PASSWORD), 401)
    r = api.login(u.email, new)
    assert r.status_code == 200, r.text
    assert api.me(r.json()["access_token"]).status_code == 200


def test_logout_all_ends_every_session(api):
    u = api.new_user("logoutall")
    sessions = [u.tokens, api.login(u.email).json(), api.login(u.email).json()]
    # One of them rotated once: its newest token must go too.
    sessions[2] = api.refresh(sessions[2]["refresh_token"]).json()
    r = api.logout_all(u.access)
    assert r.status_code == 204, r.text
    assert r.content == b""
    for s in sessions:
        assert_problem(api.refresh(s["refresh_token"]), 401)
    # Safe to repeat; and signing in again works.
    assert api.logout_all(u.access).status_code == 204
    fresh = api.login(u.email).json()
    assert api.refresh(fresh["refresh_token"]).status_code == 200
