"""e2e/istio_rbac.py against Istio's own golden files, then its output in the real Envoy 1.40.

The golden pairs are e2e/data/istio-authz/ (istio/istio, pilot/pkg/security/authz/builder/
testdata/http/, at the commit istio_rbac.ISTIO_COMMIT; README.txt there). Istio writes them
with protojson's camelCase names; the translator writes Envoy's snake_case ones, so the
golden side is renamed before comparing (Envoy reads either).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import harness
import istio_rbac
import pytest
import yaml

DATA = Path(__file__).resolve().parent / "data" / "istio-authz"


def snake(obj, policy_names: bool = False):
    """A golden file's structure with snake_case keys; the keys of `policies` are names, kept."""
    if isinstance(obj, dict):
        return {
            (k if policy_names or k.startswith("@") else re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower()): snake(
                v, k == "policies" and not policy_names
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [snake(v) for v in obj]
    return obj


def golden(name: str) -> tuple[list[dict], dict]:
    """The policies of `<name>-in.yaml` and the filter of `<name>-out.yaml` (snake_case)."""
    policies = [d for d in yaml.safe_load_all((DATA / f"{name}-in.yaml").read_text()) if d]
    return policies, snake(yaml.safe_load((DATA / f"{name}-out.yaml").read_text()))


# builder_test.go TestGenerator_GenerateHTTP builds these without a trust domain bundle
# (the zero Bundle: no trust domain at all), except simple-policy-principal-with-wildcard
# (trustdomain.NewBundle("td1", []string{"foobar"})); Option{} leaves UseFilterState off.
@pytest.mark.parametrize(
    ("name", "trust_domains"),
    [("allow-path", ()), ("simple-policy-principal-with-wildcard", ("td1", "foobar"))],
)
def test_whole_filter_equals_istios(name, trust_domains):
    """Inputs wholly within the translated shapes: the whole filter is compared, the policy
    names, `shadow_rules_stat_prefix` and the absent `action` (ALLOW) included.
    allow-path: exact, `/prefix/*`, `*suffix`, `*` and the `{*}` / `{**}` templates, in
    `paths` and `notPaths`; simple-policy-principal-with-wildcard: principals `*` and
    `*suffix`, one trust domain alias."""
    policies, want = golden(name)
    assert istio_rbac.rbac_filter(*policies, trust_domains=trust_domains) == want


def test_multiple_policies_covered_ones_equal_istios():
    """multiple-policies: nine policies in one filter. Compared: the four within the
    translated shapes (methods, no `from`; paths; principals, no `to`; namespaces). Not
    compared: the other five (hosts, ports, requestPrincipals, ipBlocks, a `when`), which the
    translator refuses, naming the field; so the whole filter is not compared either."""
    policies, want = golden("multiple-policies")
    want_policies = want["typed_config"]["rules"]["policies"]
    covered = {"httpbin-1", "httpbin-2", "httpbin-5", "httpbin-7"}
    refused = {
        "httpbin-3": "spec.rules[0].to[0].operation.hosts",
        "httpbin-4": "spec.rules[0].to[0].operation.ports",
        "httpbin-6": "spec.rules[0].from[0].source.requestPrincipals",
        "httpbin-8": "spec.rules[0].from[0].source.ipBlocks",
        "httpbin-9": "spec.rules[0].when",
    }
    assert {p["metadata"]["name"] for p in policies} == covered | set(refused)
    got = {}
    for policy in policies:
        name = policy["metadata"]["name"]
        if name in covered:
            got |= istio_rbac.rbac_policies(policy, trust_domains=())
        else:
            with pytest.raises(ValueError, match=re.escape(refused[name]) + ":"):
                istio_rbac.rbac_policies(policy, trust_domains=())
    assert got == {k: v for k, v in want_policies.items() if any(f"policy[{n}]" in k for n in covered)}
    assert len(got) == 4


def leaf_kinds(matcher: dict) -> set[str]:
    """What a permission or principal matches on, through its and/or/not sets:
    `header :method`, `url_path`, `authenticated`, `destination_port`..."""
    (key, value), *_ = matcher.items()
    if key in ("and_rules", "or_rules", "and_ids", "or_ids"):
        return set().union(*(leaf_kinds(m) for m in value["rules" if key.endswith("rules") else "ids"]))
    if key in ("not_rule", "not_id"):
        return leaf_kinds(value)
    return {f"header {value['name']}" if key == "header" else key}


def test_full_rule_in_the_translated_fields_equals_istios():
    """allow-full-rule, rule[1]: every field of a source and an operation, each with exact,
    prefix, suffix and `*` values. The translator refuses the policy as it is (rule[0] has
    serviceAccounts), so it translates rule[1] cut down to its principals, namespaces,
    methods and paths (and their not-forms), and that is compared with the entries of
    Istio's rule[1] that match on those only. Not compared: rule[0], and the entries for
    hosts, ports, requestPrincipals, ipBlocks, remoteIpBlocks and the `when` conditions;
    the `when` keys source.namespace and source.principal yield `authenticated` entries
    too, after those of `from` (model.go New: `when` appendLast, `from` insertFront), so
    only the first four `authenticated` entries are those of `from`."""
    (policy,), want = golden("allow-full-rule")
    with pytest.raises(ValueError, match=re.escape("spec.rules[0].from[0].source.serviceAccounts:")):
        istio_rbac.rbac_policies(policy, trust_domains=())

    reduced = copy.deepcopy(policy)
    rule = reduced["spec"]["rules"][1]
    source_keys = ("principals", "notPrincipals", "namespaces", "notNamespaces")
    operation_keys = ("methods", "notMethods", "paths", "notPaths")
    reduced["spec"]["rules"] = [
        {
            "from": [{"source": {k: rule["from"][0]["source"][k] for k in source_keys}}],
            "to": [{"operation": {k: rule["to"][0]["operation"][k] for k in operation_keys}}],
        }
    ]
    (got,) = istio_rbac.rbac_policies(reduced, trust_domains=()).values()

    want_rule = want["typed_config"]["rules"]["policies"]["ns[foo]-policy[httpbin-1]-rule[1]"]
    want_rules = want_rule["permissions"][0]["and_rules"]["rules"]
    want_ids = want_rule["principals"][0]["and_ids"]["ids"]
    method_path = [r for r in want_rules if leaf_kinds(r) <= {"header :method", "url_path", "uri_template"}]
    authenticated = [i for i in want_ids if leaf_kinds(i) == {"authenticated"}]
    assert len(method_path) == 4 and len(authenticated) == 8
    assert got == {
        "permissions": [{"and_rules": {"rules": method_path}}],
        "principals": [{"and_ids": {"ids": authenticated[:4]}}],
    }


def policy(rules=None, **spec) -> dict:
    body = {"rules": rules} if rules is not None else {}
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {**body, **spec},
    }


def test_shapes_no_golden_file_shows():
    """From the builder's code, for what the copied golden files do not show."""
    # model.go generatePermission / generatePrincipal: an empty list becomes `any: true`,
    # for an empty rule `{}` as for a rule without `from` or `to`.
    assert istio_rbac.rbac_policies(policy([{}])) == {
        "ns[shop]-policy[p]-rule[0]": {
            "permissions": [{"and_rules": {"rules": [{"any": True}]}}],
            "principals": [{"and_ids": {"ids": [{"any": True}]}}],
        }
    }
    # builder.go: a policy without rules gets rbacPolicyMatchNever under rule[0].
    assert istio_rbac.rbac_policies(policy()) == {
        "ns[shop]-policy[p]-rule[0]": {"permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}
    }
    # principal.go principalAuthenticated with the builder's UseFilterState (waypoints);
    # matcher/string.go StringMatcherWithPrefix: `x*` is a prefix match after `spiffe://`.
    (got,) = istio_rbac.rbac_policies(
        policy([{"from": [{"source": {"principals": ["td/ns/a/*"]}}]}]), use_filter_state=True
    ).values()
    assert got["principals"] == [
        {
            "and_ids": {
                "ids": [
                    {
                        "or_ids": {
                            "ids": [
                                {
                                    "filter_state": {
                                        "key": "io.istio.peer_principal",
                                        "string_match": {"prefix": "spiffe://td/ns/a/"},
                                    }
                                }
                            ]
                        }
                    }
                ]
            }
        }
    ]
    # trustdomain/bundle.go ReplaceTrustDomainAliases: `cluster.local` stands for the mesh's
    # trust domain and its aliases; another trust domain is kept as written.
    source = {"principals": ["cluster.local/ns/a/sa/b", "other.td/ns/a/sa/b"]}
    (got,) = istio_rbac.rbac_policies(policy([{"from": [{"source": source}]}]), trust_domains=("td1", "old")).values()
    names = [i["authenticated"]["principal_name"] for i in got["principals"][0]["and_ids"]["ids"][0]["or_ids"]["ids"]]
    assert names == [
        {"exact": "spiffe://td1/ns/a/sa/b"},
        {"exact": "spiffe://old/ns/a/sa/b"},
        {"exact": "spiffe://other.td/ns/a/sa/b"},
    ]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (policy([{}], action="DENY"), "spec.action"),
        (policy([{}], provider={"name": "opa"}), "spec.provider"),
        (
            {**policy([{}]), "metadata": {"name": "p", "namespace": "shop", "annotations": {"istio.io/dry-run": "true"}}},
            "metadata.annotations[istio.io/dry-run]",
        ),
        (policy([{"when": [{"key": "source.ip", "values": ["10.0.0.1"]}]}]), "spec.rules[0].when"),
        (policy([{"to": [{"operation": {"hosts": ["a.example"]}}]}]), "spec.rules[0].to[0].operation.hosts"),
        (policy([{"from": []}]), "spec.rules[0].from"),
        (policy([{"from": [{"source": {}}]}]), "spec.rules[0].from[0].source"),
        (policy([{"to": [{"operation": {"paths": [""]}}]}]), "spec.rules[0].to[0].operation.paths"),
        # security.go CheckValidPathTemplate (admission): {**} last, no other braces.
        (policy([{"to": [{"operation": {"paths": ["/a/{**}/b/{*}"]}}]}]), "spec.rules[0].to[0].operation.paths"),
        (policy([{"to": [{"operation": {"notPaths": ["/a/{name}"]}}]}]), "spec.rules[0].to[0].operation.notPaths"),
        (policy([{"to": [{"operation": {"paths": ["/a/{*}.txt"]}}]}]), "spec.rules[0].to[0].operation.paths"),
        (policy([None]), "spec.rules[0]"),
    ],
)
def test_refuses_what_it_does_not_translate(bad, field):
    with pytest.raises(ValueError, match="^" + re.escape(field) + ":"):
        istio_rbac.rbac_policies(bad)


# A policy without `from` (a principal would need mTLS): methods, and paths exact, prefix,
# suffix and templates. Istio would compile `{*}` and `{**}` to Envoy's uri_template matcher.
SERVED_POLICY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api, namespace: shop}
spec:
  rules:
  - to:
    - operation:
        methods: ["GET"]
        paths: ["/health", "/static/*", "*.css", "/api/{*}/items", "/files/{**}", "/docs/{**}/index.html"]
  - to:
    - operation:
        methods: ["POST"]
        paths: ["/api/{*}/orders/{**}"]
"""

# What Envoy 1.40 answers, as observed: `{*}` is exactly one segment (not none, not two,
# not an empty one); `{**}` at the end matches one or more segments, an empty last one
# included (`/files/`) but not the bare `/files`; `{**}` before a literal needs at least one
# segment (`/docs/index.html` is refused). The query string is not part of the path.
REQUESTS = [
    ("GET", "/health", 200),
    ("GET", "/health/x", 403),
    ("DELETE", "/health", 403),
    ("GET", "/static/app.js", 200),
    ("GET", "/static", 403),
    ("GET", "/css/site.css", 200),
    ("GET", "/css/site.css.map", 403),
    ("GET", "/api/v1/items", 200),
    ("GET", "/api/v1/items?page=2", 200),
    ("GET", "/api/items", 403),
    ("GET", "/api/v1/v2/items", 403),
    ("GET", "/api//items", 403),
    ("POST", "/api/v1/items", 403),
    ("GET", "/files/a", 200),
    ("GET", "/files/a/b/c", 200),
    ("GET", "/files/", 200),
    ("GET", "/files", 403),
    ("GET", "/docs/a/index.html", 200),
    ("GET", "/docs/a/b/index.html", 200),
    ("GET", "/docs/index.html", 403),
    ("GET", "/docs/a/other.html", 403),
    ("POST", "/api/v1/orders/7", 200),
    ("POST", "/api/v1/orders/7/lines/2", 200),
    ("POST", "/api/v1/orders", 403),
    ("GET", "/api/v1/orders/7", 403),
]


@pytest.fixture(scope="module")
def served():
    """The Stack of envoy.yaml with its RBAC filter replaced by the translated one."""
    rbac = istio_rbac.rbac_filter(yaml.safe_load(SERVED_POLICY))

    def adjust(config):
        filters = harness.http_connection_manager(config)["http_filters"]
        (at,) = [i for i, f in enumerate(filters) if f["name"] == "envoy.filters.http.rbac"]
        filters[at] = rbac

    s = harness.Stack(adjust=adjust)
    yield s, rbac
    s.stop()


def test_envoy_enforces_the_translated_policy(served):
    stack, rbac = served
    rules = rbac["typed_config"]["rules"]["policies"]["ns[shop]-policy[api]-rule[0]"]["permissions"][0]["and_rules"]["rules"]
    templates = [r["uri_template"]["typed_config"]["path_template"] for r in rules[1]["or_rules"]["rules"] if "uri_template" in r]
    assert templates == ["/api/*/items", "/files/**", "/docs/**/index.html"]

    got = [(method, path, stack.request(method, path)[0]) for method, path, _ in REQUESTS]
    assert got == REQUESTS
    allowed = sum(1 for *_, status in REQUESTS if status == 200)
    assert harness.stat(stack.envoy, "http.ingress.rbac.allowed") == allowed
    assert harness.stat(stack.envoy, "http.ingress.rbac.denied") == len(REQUESTS) - allowed
