"""Two auth replicas behind one gateway: both serve (their own RPC counters grow), and
when one is killed the other carries the traffic."""

from cairn import metric_sum, wait_until

N = 40


def me_calls(auth):
    return metric_sum(auth.metrics(), "cairn_rpc_calls_total", method="Me")


def test_both_replicas_serve(new_cluster):
    c = new_cluster(replicas=2)
    api = c.api()
    u = api.new_user("replicas")
    # Both dialers are up once each replica has seen a call; give them a moment.
    wait_until(lambda: all(api.me(u.access).status_code == 200 for _ in range(4)),
               timeout=5, what="warm-up")
    before = [me_calls(a) for a in c.auths]
    for _ in range(N):
        r = api.me(u.access)
        assert r.status_code == 200, r.text
    after = [me_calls(a) for a in c.auths]
    deltas = [a - b for a, b in zip(after, before)]
    assert all(d > 0 for d in deltas), f"Me calls per replica: {deltas}"
    assert sum(deltas) >= N, deltas


def test_one_replica_killed_the_other_serves(new_cluster):
    c = new_cluster(replicas=2)
    api = c.api()
    u = api.new_user("replicas")
    assert api.me(u.access).status_code == 200
    c.auths[0].kill()
    for _ in range(20):
        r = api.me(u.access)
        assert r.status_code == 200, r.text
    assert api.login(u.email).status_code == 200
