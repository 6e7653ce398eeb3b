"""CAIRN_CPUS (lib/cpus.c): a service and the gateway started with it run every thread on
those CPUs (nng's, the RPC workers', the event loops'), size their per-CPU pools by them,
and still serve; a list that is not one, or names a CPU the process cannot use, stops
start-up with exit 2 and a message that says what to write."""

import os

import pytest
import requests

import cairn


def allowed_cpus():
    return sorted(os.sched_getaffinity(0))


def thread_cpus(pid):
    """{tid: Cpus_allowed_list} of every thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list:"):
                        out[tid] = line.split(":", 1)[1].strip()
        except FileNotFoundError:
            pass  # a thread that ended while we looked
    return out


def test_every_thread_runs_on_the_cpus_given(new_cluster):
    cpus = allowed_cpus()
    if len(cpus) < 2:
        pytest.skip("on one CPU every thread is already where CAIRN_CPUS would put it")
    one = str(cpus[-1])
    # Without the harness's fixed pool sizes, so the per-CPU defaults show.
    c = new_cluster(inference=1, gateway_env={"CAIRN_CPUS": one, "CAIRN_THREADS": None},
                    inference_env={"CAIRN_CPUS": one, "CAIRN_INFERENCE_WORKERS": None})
    inf, gw = c.inferences[0], c.gateway
    # Served end to end: the health route goes through the gateway to cairn-inference.
    r = requests.get(c.url + "/v2/health/live", timeout=10)
    assert r.status_code == 200, r.text
    for proc in (inf, gw):
        seen = thread_cpus(proc.pid)
        assert len(seen) > 5, seen  # nng's threads, workers or loops, and main
        assert set(seen.values()) == {one}, (proc.name, seen)
    # One RPC worker per CPU it may use, plus two; one event loop per CPU.
    with open(inf.log, errors="replace") as f:
        started = [l for l in f if "SVC-STARTED" in l]
    assert started and "with 3 workers" in started[-1], started
    with open(gw.log, errors="replace") as f:
        listening = [l for l in f if "GW-LISTENING" in l]
    assert listening and "with 1 threads" in listening[-1], listening


def test_a_bad_list_stops_start_up(stack, log_dir):
    procs = [cairn.Gateway("cpus-gateway", [], log_dir), cairn.Inference("cpus-inference", stack, log_dir)]
    cpus = allowed_cpus()
    missing = next(n for n in range(4096) if n not in cpus)
    for proc in procs:
        for value, words in (("0-x", "expected the end of the range"), ("a", "expected a CPU number"),
                             (str(missing), "cannot run on")):
            r = proc.command(env={"CAIRN_CPUS": value}, timeout=20)
            assert r.returncode == 2, (proc.name, value, r.returncode, r.stderr)
            assert "CAIRN_CPUS" in r.stderr and words in r.stderr, (proc.name, value, r.stderr)
        # --help still answers, and lists the setting.
        r = proc.command("--help", env={"CAIRN_CPUS": "0-x"}, timeout=20)
        assert r.returncode == 0 and "CAIRN_CPUS" in r.stdout, (proc.name, r.returncode, r.stderr)
