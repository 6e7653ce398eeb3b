"""docs/openapi.yaml equals the gateway's route table.

`cairn-gateway --routes` prints gateway/routes.c as JSON; this test holds the hand-written
OpenAPI document to it: the same (method, path) pairs in both directions, the same RPC,
auth kind (x-cairn-auth) and scope (x-cairn-scope) behind each, bearerAuth on every
non-public route and on no public one, the X-API-Key alternative (apiKeyAuth) on exactly
the routes an API key may call (user and admin, not session), the route's success status
among the responses, 401/403 where credentials can be refused, and X-Request-Id on every
response. A route's flags, body cap and timeout are documented as x-cairn-raw,
x-cairn-oip-errors, x-cairn-max-body and x-cairn-timeout-ms; errors are problem+json
except on x-cairn-oip-errors routes, whose errors are the Open Inference Protocol's
{"error": "..."} (the OipError schema), and a raw route offers no protobuf body. Operations
marked `x-cairn-builtin` (the gateway's own /healthz and /readyz) are not routes and are
left out of the comparison.

The traffic policies (gateway/proxy.c and the files of its steps) are held to the document
too: every route operation takes the five policy headers as parameters (traceparent,
X-Request-Timeout-Ms, Idempotency-Key, X-Fault-Delay-Ms, X-Fault-Abort) with the bounds
the code accepts, and the probes take only traceparent (they are answered before
deadlines, rate limits and faults); x-cairn-idempotent (which decides retries) equals the
route's idempotent flag; every route lists 400 (a malformed X-Request-Timeout-Ms), 429 (a
rate limit may cover any route) and 504 (every route has a timeout); every response,
probes included, has X-Request-Id and Server-Timing; a route's success and 429 responses
have RateLimit and RateLimit-Policy, optional (only when a policy covers the request), and
the probes' responses do not. Needs only the built gateway binary and the gateway's
sources, no running stack.
"""

import json
import pathlib
import re
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "build" / "bin" / "cairn-gateway"
OPENAPI = ROOT / "docs" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
BUILTINS = {("GET", "/healthz"), ("GET", "/readyz")}
# Request headers the gateway's traffic policies read (gateway/proxy.c), lowercased.
POLICY_HEADERS = {"traceparent", "x-request-timeout-ms", "idempotency-key", "x-fault-delay-ms", "x-fault-abort"}
# gw_proxy_on_req answers /healthz and /readyz after reading traceparent and before
# deadline_init, the rate-limit step and step_fault.
BUILTIN_POLICY_HEADERS = {"traceparent"}
ROUTE_STATUSES = ("400", "429", "504")


@pytest.fixture(scope="module")
def routes():
    if not GATEWAY.exists():
        pytest.fail(f"{GATEWAY} is missing: run `make` first")
    out = subprocess.run([str(GATEWAY), "--routes"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"cairn-gateway --routes failed ({out.returncode}): {out.stderr}"
    table = json.loads(out.stdout)
    assert table, "the route table is empty"
    return {(r["method"], r["path"]): r for r in table}


@pytest.fixture(scope="module")
def spec():
    with OPENAPI.open() as f:
        return yaml.safe_load(f)


def operations(spec):
    """{(METHOD, path): operation} for every operation in the document."""
    ops = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                ops[(method.upper(), path)] = op
    return ops


def route_ops(spec):
    return {k: op for k, op in operations(spec).items() if not op.get("x-cairn-builtin")}


def resolve(spec, obj):
    """Follows a local $ref ('#/components/...') to the object it names."""
    while isinstance(obj, dict) and "$ref" in obj:
        ref = obj["$ref"]
        assert ref.startswith("#/"), f"only local $refs are used: {ref}"
        node = spec
        for part in ref[2:].split("/"):
            assert part in node, f"dangling $ref {ref}"
            node = node[part]
        obj = node
    return obj


def fmt(pairs):
    return ", ".join(f"{m} {p}" for m, p in sorted(pairs, key=lambda k: (k[1], k[0])))


def test_document_is_openapi_3_1(spec):
    assert str(spec.get("openapi", "")).startswith("3.1"), "docs/openapi.yaml must be OpenAPI 3.1"
    assert "Problem" in spec["components"]["schemas"], "the shared Problem schema is missing"
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    api_key = schemes.get("apiKeyAuth", {})
    assert (api_key.get("type"), api_key.get("in"), api_key.get("name")) == ("apiKey", "header", "X-API-Key"), \
        f"apiKeyAuth must be an apiKey scheme in the X-API-Key header: {api_key}"


def test_every_route_is_documented(routes, spec):
    missing = set(routes) - set(route_ops(spec))
    assert not missing, f"routes in gateway/routes.c missing from docs/openapi.yaml: {fmt(missing)}"


def test_every_documented_operation_is_a_route(routes, spec):
    extra = set(route_ops(spec)) - set(routes)
    assert not extra, f"operations in docs/openapi.yaml that gateway/routes.c does not serve: {fmt(extra)}"


def test_builtins_are_the_gateways_own_probes(spec):
    builtin = {k for k, op in operations(spec).items() if op.get("x-cairn-builtin")}
    assert builtin == BUILTINS, (
        f"x-cairn-builtin operations are {fmt(builtin) or 'none'}; the gateway itself answers "
        f"only {fmt(BUILTINS)} (gateway/proxy.c)"
    )


def test_operations_name_their_rpc(routes, spec):
    wrong = []
    for key, op in route_ops(spec).items():
        r = routes.get(key)
        if r is None:
            continue
        got = (op.get("x-cairn-service"), op.get("x-cairn-rpc"))
        if got != (r["service"], r["rpc"]):
            wrong.append(f"{key[0]} {key[1]}: documents {got[0]}.{got[1]}, routes.c has {r['service']}.{r['rpc']}")
    assert not wrong, "x-cairn-service/x-cairn-rpc disagree with the route table:\n" + "\n".join(wrong)


def test_auth_and_scope_match_the_route_table(routes, spec):
    wrong = []
    for key, op in route_ops(spec).items():
        r = routes.get(key)
        if r is None:
            continue
        got = (op.get("x-cairn-auth"), op.get("x-cairn-scope"))
        if got != (r["auth"], r["scope"]):
            wrong.append(f"{key[0]} {key[1]}: documents auth={got[0]!r} scope={got[1]!r}, "
                         f"routes.c has auth={r['auth']!r} scope={r['scope']!r}")
    assert not wrong, "x-cairn-auth/x-cairn-scope disagree with the route table:\n" + "\n".join(wrong)


def test_scopes_are_known(routes, spec):
    known = set(resolve(spec, {"$ref": "#/components/schemas/Scope"})["enum"])
    unknown = [f"{m} {p}: {r['scope']}" for (m, p), r in routes.items() if r["scope"] and r["scope"] not in known]
    assert not unknown, "routes need scopes the Scope schema does not list: " + ", ".join(unknown)


def test_security_matches_auth(routes, spec):
    ops = route_ops(spec)
    global_security = spec.get("security", [])
    wrong = []
    for key, r in routes.items():
        op = ops.get(key)
        if op is None:
            continue
        security = op.get("security", global_security)
        needs_bearer = any("bearerAuth" in req for req in security)
        takes_key = any("apiKeyAuth" in req for req in security)
        anonymous_ok = not security or any(req == {} for req in security)
        where = f"{key[0]} {key[1]} is a {r['auth']} route"
        if r["auth"] in ("user", "session", "admin") and (not needs_bearer or anonymous_ok):
            wrong.append(f"{where} but does not require bearerAuth")
        if r["auth"] in ("user", "admin") and not takes_key:
            wrong.append(f"{where} but does not list apiKeyAuth (X-API-Key) as an alternative")
        if r["auth"] == "session" and takes_key:
            wrong.append(f"{where} (access tokens only) but lists apiKeyAuth")
        if r["auth"] == "public" and not anonymous_ok:
            wrong.append(f"{where} but requires credentials (use `security: []`)")
    assert not wrong, "\n".join(wrong)


def test_success_status_is_documented(routes, spec):
    ops = route_ops(spec)
    wrong = []
    for key, r in routes.items():
        op = ops.get(key)
        if op is None:
            continue
        codes = {str(c) for c in op.get("responses", {})}
        if str(r["status"]) not in codes:
            wrong.append(f"{key[0]} {key[1]} answers {r['status']} but documents only {sorted(codes)}")
        other = {c for c in codes if c.startswith("2") and c != str(r["status"])}
        if other:
            wrong.append(f"{key[0]} {key[1]} documents success {sorted(other)}; routes.c says {r['status']}")
    assert not wrong, "\n".join(wrong)


def test_errors_are_problem_json(routes, spec):
    wrong = []
    for (method, path), op in operations(spec).items():
        oip = routes.get((method, path), {}).get("oip_errors", False)
        media, schema_ref = (("application/json", "#/components/schemas/OipError") if oip else
                             ("application/problem+json", "#/components/schemas/Problem"))
        for code, resp in op.get("responses", {}).items():
            if not str(code).startswith(("4", "5")):
                continue
            content = resolve(spec, resp).get("content", {})
            schema = content.get(media, {}).get("schema", {})
            if schema.get("$ref") != schema_ref or len(content) != 1:
                wrong.append(f"{method} {path} {code} (expected only {media} with {schema_ref.rsplit('/', 1)[1]})")
    assert not wrong, "error responses of the wrong shape: " + ", ".join(wrong)


def test_flags_caps_and_timeouts_match_the_route_table(routes, spec):
    wrong = []
    for key, op in route_ops(spec).items():
        r = routes.get(key)
        if r is None:
            continue
        where = f"{key[0]} {key[1]}"
        for ext, field, default in (("x-cairn-raw", "raw", False), ("x-cairn-oip-errors", "oip_errors", False),
                                    ("x-cairn-max-body", "max_body", 0), ("x-cairn-timeout-ms", "timeout_ms", 0)):
            if op.get(ext, default) != r[field]:
                wrong.append(f"{where}: documents {ext}={op.get(ext, default)!r}, routes.c has {r[field]!r}")
        body = op.get("requestBody", {}).get("content", {})
        if r["raw"] and "application/x-protobuf" in body:
            wrong.append(f"{where}: a raw route takes its body as is; it offers no application/x-protobuf body")
    assert not wrong, "\n".join(wrong)


def test_user_routes_document_401(routes, spec):
    ops = route_ops(spec)
    missing = [
        f"{k[0]} {k[1]}"
        for k, r in routes.items()
        if r["auth"] != "public" and k in ops and "401" not in {str(c) for c in ops[k]["responses"]}
    ]
    # 403: an admin route refuses other roles, a session route refuses API keys, a scoped
    # route refuses credentials without the scope.
    missing += [
        f"{k[0]} {k[1]} (403)"
        for k, r in routes.items()
        if (r["auth"] in ("admin", "session") or r["scope"]) and k in ops
        and "403" not in {str(c) for c in ops[k]["responses"]}
    ]
    assert not missing, ("routes that need credentials must document 401 (and admin, session and "
                         "scoped ones 403): " + ", ".join(missing))


def test_every_response_has_x_request_id_and_server_timing(spec):
    # gateway/proxy.c respond(): every answer, the probes' and every error's included.
    for name in ("X-Request-Id", "Server-Timing"):
        missing = []
        for (method, path), op in operations(spec).items():
            for code, resp in op.get("responses", {}).items():
                headers = {h.lower(): resolve(spec, v) for h, v in resolve(spec, resp).get("headers", {}).items()}
                if name.lower() not in headers:
                    missing.append(f"{method} {path} {code}")
                elif headers[name.lower()].get("required") is not True:
                    missing.append(f"{method} {path} {code} (not required: true)")
        assert not missing, f"responses without the {name} header: " + ", ".join(missing)


def header_params(spec, op):
    """{lowercased name: parameter} of an operation's header parameters."""
    params = (resolve(spec, p) for p in op.get("parameters", []))
    return {p["name"].lower(): p for p in params if p.get("in") == "header"}


def test_routes_take_the_policy_headers(spec):
    wrong = []
    for (method, path), op in operations(spec).items():
        want = BUILTIN_POLICY_HEADERS if op.get("x-cairn-builtin") else POLICY_HEADERS
        got = set(header_params(spec, op)) & POLICY_HEADERS
        if got != want:
            missing, extra = sorted(want - got), sorted(got - want)
            wrong.append(f"{method} {path}: " + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else []) +
                ([f"lists {', '.join(extra)}, which the gateway does not read there"] if extra else [])))
    assert not wrong, ("every route takes the traffic-policy headers (components/parameters Traceparent, "
                       "RequestTimeoutMs, IdempotencyKey, FaultDelayMs, FaultAbort), the probes only "
                       "traceparent:\n" + "\n".join(wrong))


def test_policy_header_bounds_match_the_gateway(spec):
    max_delay = int(re.search(r"#define GW_FAULT_MAX_DELAY_MS (\d+)",
                              (ROOT / "gateway" / "fault.h").read_text()).group(1))
    want = {
        # proxy.c deadline_init: 1 to 12 digits, above 0.
        "x-request-timeout-ms": ("integer", 1, 10**12 - 1),
        # fault.c gw_fault_parse_headers.
        "x-fault-delay-ms": ("integer", 0, max_delay),
        "x-fault-abort": ("integer", 400, 599),
    }
    # trace.c gw_trace_parse: version 00, lowercase hex.
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    bad = (good.upper(), "01" + good[2:], good + "-00")
    wrong = []
    for (method, path), op in operations(spec).items():
        for name, param in header_params(spec, op).items():
            schema = param.get("schema", {})
            if name in want:
                got = (schema.get("type"), schema.get("minimum"), schema.get("maximum"))
                if got != want[name]:
                    wrong.append(f"{method} {path} {name}: documents (type, minimum, maximum) {got}, "
                                 f"the gateway takes {want[name]}")
            elif name == "traceparent":
                pattern = re.compile(schema.get("pattern", ""))
                if not pattern.fullmatch(good) or any(pattern.fullmatch(b) for b in bad):
                    wrong.append(f"{method} {path} traceparent: pattern {pattern.pattern!r} is not version 00 "
                                 f"in lowercase hex")
    assert not wrong, "\n".join(wrong)


def test_idempotent_matches_the_route_table(routes, spec):
    # Retries after a lost connection or UNAVAILABLE depend on it (gateway/retry.c).
    wrong = [f"{k[0]} {k[1]}: documents x-cairn-idempotent={op.get('x-cairn-idempotent')!r}, "
             f"routes.c has {routes[k]['idempotent']!r}"
             for k, op in route_ops(spec).items()
             if k in routes and op.get("x-cairn-idempotent") != routes[k]["idempotent"]]
    assert not wrong, "\n".join(wrong)


def test_routes_list_400_429_and_504(spec):
    missing = [f"{m} {p} ({', '.join(c for c in ROUTE_STATUSES if c not in {str(k) for k in op['responses']})})"
               for (m, p), op in route_ops(spec).items()
               if not set(ROUTE_STATUSES) <= {str(k) for k in op.get("responses", {})}]
    assert not missing, ("every route can answer 400 (a malformed X-Request-Timeout-Ms), 429 (a rate limit) and "
                         "504 (its timeout): " + ", ".join(missing))


def test_rate_limit_headers(spec):
    wrong = []
    for (method, path), op in operations(spec).items():
        for code, resp in op.get("responses", {}).items():
            headers = resolve(spec, resp).get("headers", {})
            got = {h.lower(): resolve(spec, v) for h, v in headers.items()}
            have = {"ratelimit", "ratelimit-policy"} & set(got)
            where = f"{method} {path} {code}"
            if op.get("x-cairn-builtin"):
                if have:
                    wrong.append(f"{where}: the probes are never rate-limited, yet it lists {sorted(have)}")
                continue
            if str(code).startswith("2") or str(code) == "429":
                if have != {"ratelimit", "ratelimit-policy"}:
                    wrong.append(f"{where}: missing {sorted({'ratelimit', 'ratelimit-policy'} - have)}")
            for h in have:
                if got[h].get("required") is not False:
                    wrong.append(f"{where}: {h} must be required: false (only when a policy covers the request)")
    assert not wrong, "RateLimit/RateLimit-Policy headers:\n" + "\n".join(wrong)


def test_refs_resolve(spec):
    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(spec, node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
