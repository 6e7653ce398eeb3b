"""A user's life through the gateway: register, log in, /me, refresh with rotation, reuse
detection with its grace, logout; and the input errors of each step."""

import statistics
import time

from cairn import PASSWORD, as_int, assert_problem, unique_email

GRACE_S = 5  # CAIRN_AUTH_REUSE_GRACE_S default


def test_register_login_me_refresh_logout(api):
    email = unique_email("story")
    t0 = time.time()
    r = api.register(email)
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    u = r.json()
    assert set(u) >= {"id", "email", "role", "created_at", "disabled"}, u
    assert u["email"] == email
    assert u["role"] == "user"
    assert u["disabled"] is False
    assert u["id"]
    created = as_int(u["created_at"])
    assert abs(created / 1000 - t0) < 60, (created, t0)
    assert "password" not in r.text and PASSWORD not in r.text

    r = api.login(email)
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["token_type"] == "Bearer"
    assert t["access_token"].count(".") == 2
    assert 0 < as_int(t["expires_in"]) <= 86400
    assert as_int(t["refresh_expires_in"]) > as_int(t["expires_in"])
    assert t["refresh_token"] and t["refresh_token"] != t["access_token"]

    r = api.me(t["access_token"])
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["id"] == u["id"] and me["email"] == email and me["role"] == "user"

    r = api.refresh(t["refresh_token"])
    assert r.status_code == 200, r.text
    t2 = r.json()
    assert t2["refresh_token"] != t["refresh_token"], "refresh must rotate"
    assert t2["token_type"] == "Bearer"
    assert api.me(t2["access_token"]).status_code == 200

    r = api.logout(t2["refresh_token"], t2["access_token"])
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_problem(api.refresh(t2["refresh_token"]), 401)


def test_me_without_token_is_401(api):
    r = api.me()
    assert_problem(r, 401)


def test_rotated_token_reused_after_grace_revokes_the_family(api):
    u = api.new_user("reuse")
    r0 = u.refresh
    r = api.refresh(r0)
    assert r.status_code == 200, r.text
    r1 = r.json()["refresh_token"]
    time.sleep(GRACE_S + 1)
    # r0 was rotated more than the grace ago: this is a replay.
    assert_problem(api.refresh(r0), 401)
    # ... and the whole family is revoked, the newest token included.
    assert_problem(api.refresh(r1), 401)


def test_previous_token_within_grace_works_once_more(api):
    u = api.new_user("grace")
    r0 = u.refresh
    r = api.refresh(r0)
    assert r.status_code == 200, r.text
    r1 = r.json()["refresh_token"]
    # A client that lost the response to its refresh retries with the same token.
    r = api.refresh(r0)
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["refresh_token"] and again["refresh_token"] != r0
    assert api.me(again["access_token"]).status_code == 200
    assert r1


def test_older_than_previous_token_is_reuse_even_within_grace(api):
    u = api.new_user("older")
    r0 = u.refresh
    r1 = api.refresh(r0).json()["refresh_token"]
    r = api.refresh(r1)
    assert r.status_code == 200, r.text
    r2 = r.json()["refresh_token"]
    # r0 is two rotations old: no grace for it, and the family goes.
    assert_problem(api.refresh(r0), 401)
    assert_problem(api.refresh(r2), 401)


def test_logout_revokes_the_family(api):
    u = api.new_user("logout")
    r0 = u.refresh
    r1 = api.refresh(r0).json()["refresh_token"]
    r = api.logout(r1, u.access)
    assert r.status_code == 204, r.text
    assert_problem(api.refresh(r1), 401)
    assert_problem(api.refresh(r0), 401)


def test_other_sessions_survive_one_logout(api):
    u = api.new_user("sessions")
    other = api.login(u.email).json()
    r = api.logout(u.refresh, u.access)
    assert r.status_code == 204, r.text
    r = api.refresh(other["refresh_token"])
    assert r.status_code == 200, r.text


def test_unknown_refresh_token_is_401(api):
    assert_problem(api.refresh("x" * 43), 401)
    r = api.refresh("")
    assert r.status_code in (400, 401), r.text
    assert_problem(r, r.status_code)


def test_duplicate_email_is_409(api):
    email = unique_email("dup")
    assert api.register(email).status_code == 201
    body = assert_problem(api.register(email, PASSWORD + "!"), 409)
    assert body["detail"]


def test_bad_email_is_400_naming_email(api):
    for bad in ("", "no-at-sign", "two@@example.com", "@example.com", "user@",
                "spaces in@example.com", "a" * 300 + "@example.com"):
        assert_problem(api.register(bad), 400, field="email")


def test_password_length_is_checked(api):
    assert_problem(api.register(unique_email(), "x" * 11), 400, field="password")
    assert_problem(api.register(unique_email(), ""), 400, field="password")
    assert_problem(api.register(unique_email(), "x" * 1025), 400, field="password")
    assert api.register(unique_email(), "x" * 12).status_code == 201
    assert api.register(unique_email(), "x" * 1024).status_code == 201


def test_wrong_password_and_unknown_email_look_the_same(api):
    u = api.new_user("enum")
    wrong = api.login(u.email, PASSWORD + "x")
    unknown = api.login(unique_email("ghost"))
    a = assert_problem(wrong, 401)
    b = assert_problem(unknown, 401)
    a.pop("request_id")
    b.pop("request_id")
    assert a == b
    assert wrong.headers["Content-Type"] == unknown.headers["Content-Type"]


def test_wrong_password_and_unknown_email_take_similar_time(api):
    u = api.new_user("timing")
    wrong, unknown = [], []
    for _ in range(7):
        t = time.perf_counter()
        assert api.login(u.email, PASSWORD + "x").status_code == 401
        wrong.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert api.login(unique_email("ghost")).status_code == 401
        unknown.append(time.perf_counter() - t)
    w, n = statistics.median(wrong), statistics.median(unknown)
    # An unknown email must still cost a password hash (~20 ms), not a quick miss.
    assert n > 0.5 * w, (w, n)

