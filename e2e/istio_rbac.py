"""Istio `AuthorizationPolicy` (action ALLOW) to the Envoy HTTP RBAC filter Istio generates for it.

A small, dependency-free translation of Istio's authorization builder, for the shapes the
suite needs and nothing else:
- `rules[].from[].source`: `principals` and `namespaces` (and their `notPrincipals`,
  `notNamespaces`, which go through the same code with one `not_id` around them);
- `rules[].to[].operation`: `methods` and `paths` (and `notMethods`, `notPaths`), paths
  exact, `/prefix/*`, `*suffix`, `*`, and the path templates `{*}` and `{**}`;
- a rule without `from` or without `to` (any), an empty rule `{}`, and a policy without
  rules (matches nothing).
Anything else (another field, another action, a dry-run policy, what Istio's admission
validation rejects) raises ValueError naming the field.

It follows the code of istio/istio at commit ISTIO_COMMIT (read, not guessed):
- pilot/pkg/security/authz/builder/builder.go: `build` (one RBAC policy per rule, named by
  `policyName`: `ns[<namespace>]-policy[<name>]-rule[<index>]`; a policy without rules gets
  `rbacPolicyMatchNever`), `buildHTTP` (one filter `envoy.filters.http.rbac`, its
  `shadow_rules_stat_prefix` from `shadowRuleStatPrefix(nil)`, which is the ALLOW prefix
  `istio_dry_run_allow_` even with no shadow rules; action ALLOW is the proto default,
  so no `action` is shown);
- pilot/pkg/security/authz/model/model.go: `New` (per `from`, `insertFront` of namespaces
  then principals, so principals come first; per `to`, paths then methods, so methods come
  first), `Generate`, `generatePermission` / `generatePrincipal` (an `and_rules` / `and_ids`
  per `to` / `from`, `any: true` when empty), `rule.permission` / `rule.principal` (values
  in one `or_*`, not-values in `not_*` of an `or_*`);
- pilot/pkg/security/authz/model/generator.go: `srcPrincipalGenerator` (the string matcher
  of the value with the prefix `spiffe://`), `srcNamespaceGenerator` (regex
  `.*/ns/<ns>/.*`, `*` as `.*`), `methodGenerator` (`:method` header matcher),
  `pathGenerator` (a `uri_template` permission when the path has `{*}` or `{**}`, else
  `url_path`);
- pilot/pkg/security/authz/model/principal.go: `principalAuthenticated`
  (`authenticated.principal_name`, or with the builder's UseFilterState, as on waypoints
  and a sidecar's HBONE inbound chains, a `filter_state` matcher on `io.istio.peer_principal`);
- pilot/pkg/security/authz/model/permission.go: `permissionPathTemplate` (a
  TypedExtensionConfig named `uri-template` holding an UriTemplateMatchConfig);
- pilot/pkg/security/authz/matcher/{string,header,template}.go: `StringMatcherWithPrefix`,
  `HeaderMatcher`, `PathMatcher`, `PathTemplateMatcher` (`{*}` to `*`, `{**}` to `**`);
- pilot/pkg/security/trustdomain/{bundle,util}.go: `ReplaceTrustDomainAliases` (a principal
  `<td>/ns/<ns>/sa/<sa>` of the local trust domain, an alias or `cluster.local` is
  written once per trust domain of the bundle);
- pkg/config/validation/validation.go `ValidateAuthorizationPolicy` and
  pkg/config/security/security.go `CheckEmptyValues`, `CheckValidPathTemplate`: what admission
  refuses, refused here too.

The output uses Envoy's snake_case field names (Envoy reads them as it reads Istio's
camelCase JSON names); e2e/test_istio_rbac.py compares it with Istio's golden files.
"""

from __future__ import annotations

import re

ISTIO_COMMIT = "86c9f01fd735fb01d8192f5bcaf0d424afb7f14c"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
URI_TEMPLATE_TYPE = "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"
# builder.go shadowRuleStatPrefix; model.go RBACShadowRulesAllowStatPrefix.
ALLOW_SHADOW_STAT_PREFIX = "istio_dry_run_allow_"
# principal.go principalAuthenticated, the UseFilterState form.
PEER_PRINCIPAL_KEY = "io.istio.peer_principal"
SPIFFE_PREFIX = "spiffe://"  # pkg/spiffe URIPrefix
CLUSTER_LOCAL = "cluster.local"  # pkg/config/constants DefaultClusterLocalDomain
MATCH_ONE, MATCH_ANY = "{*}", "{**}"  # pkg/config/security MatchOneTemplate, MatchAnyTemplate
# pkg/config/security validLiteral: RFC 3986 pchar, a literal segment of a path template.
_VALID_LITERAL = re.compile(r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]+")
# Go's regexp.QuoteMeta escapes exactly these (Python's re.escape escapes more).
_GO_REGEX_META = set("\\.+*?()|[]{}^$")

# Which fields of a source / an operation are translated, in the order the builder's
# `insertFront` calls leave them (model.go `New`: the last inserted comes first).
_SOURCE_FIELDS = (("principals", "notPrincipals"), ("namespaces", "notNamespaces"))
_OPERATION_FIELDS = (("methods", "notMethods"), ("paths", "notPaths"))
# The field names in Istio's validation messages: Principals, NotPrincipals, ...
_VALIDATION_FIELDS = {k: k[0].upper() + k[1:] for pair in (*_SOURCE_FIELDS, *_OPERATION_FIELDS) for k in pair}


def policy_name(namespace: str, name: str, rule: int) -> str:
    """builder.go policyName, for ALLOW/DENY/AUDIT (no ext_authz prefix)."""
    return f"ns[{namespace}]-policy[{name}]-rule[{rule}]"


def rbac_policies(
    policy: dict, trust_domains: tuple[str, ...] | list[str] = (CLUSTER_LOCAL,), use_filter_state: bool = False
) -> dict[str, dict]:
    """The RBAC policies (`rules.policies` entries) Istio generates for one ALLOW policy.

    `trust_domains` is Istio's trust domain bundle: the mesh's trust domain, then its aliases
    (meshConfig trustDomain, trustDomainAliases). `use_filter_state` is the builder's option
    of that name (principals matched on filter state, as on waypoints)."""
    if not isinstance(policy, dict):
        raise ValueError("policy: expected a mapping (an AuthorizationPolicy parsed from YAML)")
    _only(policy, ("apiVersion", "kind", "metadata", "spec"), "")
    if policy.get("apiVersion") not in ("security.istio.io/v1", "security.istio.io/v1beta1"):
        raise ValueError(f"apiVersion: expected security.istio.io/v1 (or v1beta1), found {policy.get('apiVersion')!r}")
    if policy.get("kind") != "AuthorizationPolicy":
        raise ValueError(f"kind: expected AuthorizationPolicy, found {policy.get('kind')!r}")
    metadata = policy.get("metadata") or {}
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not name:
        raise ValueError("metadata.name: required")
    if not namespace:
        raise ValueError("metadata.namespace: required (Istio names the RBAC policy after it)")
    dry_run = (metadata.get("annotations") or {}).get("istio.io/dry-run")
    # builder.go isDryRun: strconv.ParseBool; a value that does not parse counts as false.
    if str(dry_run) in ("1", "t", "T", "TRUE", "true", "True"):
        raise ValueError("metadata.annotations[istio.io/dry-run]: dry-run policies (shadow rules) are not translated")
    spec = policy.get("spec") or {}
    # selector only chooses the workloads; it does not change the filter.
    _only(spec, ("selector", "action", "rules"), "spec.")
    if spec.get("action", "ALLOW") != "ALLOW":
        raise ValueError(f"spec.action: only ALLOW is translated, found {spec['action']!r}")
    rules = spec.get("rules")
    if rules is None:
        rules = []
    if not isinstance(rules, list):
        raise ValueError("spec.rules: expected a list")

    out: dict[str, dict] = {}
    for i, rule in enumerate(rules):
        out[policy_name(namespace, name, i)] = _rule_policy(rule, f"spec.rules[{i}]", tuple(trust_domains), use_filter_state)
    if not rules:
        # builder.go: "Generate an explicit policy that never matches." (rbacPolicyMatchNever)
        out[policy_name(namespace, name, 0)] = {
            "permissions": [{"not_rule": {"any": True}}],
            "principals": [{"not_id": {"any": True}}],
        }
    return out


def rbac_filter(*policies: dict, trust_domains=(CLUSTER_LOCAL,), use_filter_state: bool = False) -> dict:
    """The HTTP RBAC filter of a workload's ALLOW policies (Istio puts all of them in one)."""
    if not policies:
        raise ValueError("policies: at least one (with none, Istio generates no RBAC filter)")
    merged: dict[str, dict] = {}
    for policy in policies:
        for key, value in rbac_policies(policy, trust_domains, use_filter_state).items():
            if key in merged:
                raise ValueError(f"metadata: two policies named {key}")
            merged[key] = value
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": RBAC_TYPE,
            "rules": {"policies": merged},
            "shadow_rules_stat_prefix": ALLOW_SHADOW_STAT_PREFIX,
        },
    }


def _only(obj: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise ValueError(f"{where}{key}: not translated (only {', '.join(allowed)})")


def _values(obj: dict, key: str, where: str) -> list[str]:
    values = obj.get(key)
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{where}{key}: expected a list of strings")
    # validation.go: security.CheckEmptyValues.
    if "" in values:
        raise ValueError(f"{where}{key}: empty value not allowed, found in {_VALIDATION_FIELDS[key]}")
    return values


def _rule_policy(rule, where: str, trust_domains: tuple[str, ...], use_filter_state: bool) -> dict:
    if rule is None:
        # validation.go: "`rule` must not be nil" (the builder would skip it).
        raise ValueError(f"{where}: must not be nil")
    if not isinstance(rule, dict):
        raise ValueError(f"{where}: expected a mapping")
    _only(rule, ("from", "to"), f"{where}.")

    # model.go New: one principal per `from` (none: the base principal, empty, any).
    principals = []
    froms = rule.get("from")
    if froms is not None and (not isinstance(froms, list) or not froms):
        raise ValueError(f"{where}.from: must not be empty")
    for j, entry in enumerate(froms or []):
        at = f"{where}.from[{j}]"
        if not isinstance(entry, dict) or entry.get("source") is None:
            raise ValueError(f"{at}.source: must not be nil")
        _only(entry, ("source",), f"{at}.")
        source = entry["source"]
        if not isinstance(source, dict):
            raise ValueError(f"{at}.source: expected a mapping")
        if not any(source.values()):
            # validation.go: "`from.source` must not be empty".
            raise ValueError(f"{at}.source: must not be empty")
        _only(source, tuple(k for pair in _SOURCE_FIELDS for k in pair), f"{at}.source.")
        ids = []
        for values_key, not_key in _SOURCE_FIELDS:
            values = _values(source, values_key, f"{at}.source.")
            not_values = _values(source, not_key, f"{at}.source.")
            if values_key == "principals":
                # model.go MigrateTrustDomain: source principals only.
                values = _replace_trust_domain_aliases(values, trust_domains)
                not_values = _replace_trust_domain_aliases(not_values, trust_domains)
                make = _principal_name
            else:
                make = _namespace
            ids += _combine([make(v, use_filter_state) for v in values], [make(v, use_filter_state) for v in not_values], "ids")
        principals.append({"and_ids": {"ids": ids or [{"any": True}]}})
    if not froms:
        principals.append({"and_ids": {"ids": [{"any": True}]}})

    # model.go New: one permission per `to` (none: the base permission, empty, any).
    permissions = []
    tos = rule.get("to")
    if tos is not None and (not isinstance(tos, list) or not tos):
        raise ValueError(f"{where}.to: must not be empty")
    for j, entry in enumerate(tos or []):
        at = f"{where}.to[{j}]"
        if not isinstance(entry, dict) or entry.get("operation") is None:
            raise ValueError(f"{at}.operation: must not be nil")
        _only(entry, ("operation",), f"{at}.")
        operation = entry["operation"]
        if not isinstance(operation, dict):
            raise ValueError(f"{at}.operation: expected a mapping")
        if not any(operation.values()):
            # validation.go: "`to.operation` must not be empty".
            raise ValueError(f"{at}.operation: must not be empty")
        _only(operation, tuple(k for pair in _OPERATION_FIELDS for k in pair), f"{at}.operation.")
        rules = []
        for values_key, not_key in _OPERATION_FIELDS:
            values = _values(operation, values_key, f"{at}.operation.")
            not_values = _values(operation, not_key, f"{at}.operation.")
            if values_key == "paths":
                _check_valid_path_template(values, f"{at}.operation.paths")
                _check_valid_path_template(not_values, f"{at}.operation.notPaths")
                make = _path
            else:
                make = _method
            rules += _combine([make(v) for v in values], [make(v) for v in not_values], "rules")
        permissions.append({"and_rules": {"rules": rules or [{"any": True}]}})
    if not tos:
        permissions.append({"and_rules": {"rules": [{"any": True}]}})

    return {"permissions": permissions, "principals": principals}


def _combine(matched: list[dict], not_matched: list[dict], kind: str) -> list[dict]:
    """model.go rule.principal / rule.permission: the values ORed, then NOT of the not-values
    ORed; `kind` is "ids" (principals) or "rules" (permissions)."""
    or_key, not_key = ("or_ids", "not_id") if kind == "ids" else ("or_rules", "not_rule")
    out = []
    if matched:
        out.append({or_key: {kind: matched}})
    if not_matched:
        out.append({not_key: {or_key: {kind: not_matched}}})
    return out


def _go_quote_meta(s: str) -> str:
    return "".join("\\" + c if c in _GO_REGEX_META else c for c in s)


def _string_matcher(value: str, prefix: str = "") -> dict:
    """matcher/string.go StringMatcherWithPrefix (`*` is `.+`, the prefix then ignored)."""
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.startswith("*"):
        if prefix == "":
            return {"suffix": value[1:]}
        return {"safe_regex": {"regex": prefix + ".*" + _go_quote_meta(value[1:])}}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1]}
    return {"exact": prefix + value}


def _authenticated(matcher: dict, use_filter_state: bool) -> dict:
    """model/principal.go principalAuthenticated."""
    if use_filter_state:
        return {"filter_state": {"key": PEER_PRINCIPAL_KEY, "string_match": matcher}}
    return {"authenticated": {"principal_name": matcher}}


def _principal_name(value: str, use_filter_state: bool) -> dict:
    """generator.go srcPrincipalGenerator."""
    return _authenticated(_string_matcher(value, SPIFFE_PREFIX), use_filter_state)


def _namespace(value: str, use_filter_state: bool) -> dict:
    """generator.go srcNamespaceGenerator: `*` is `.*`, the rest quoted."""
    regex = ".*".join(_go_quote_meta(part) for part in value.split("*"))
    return _authenticated({"safe_regex": {"regex": f".*/ns/{regex}/.*"}}, use_filter_state)


def _method(value: str) -> dict:
    """generator.go methodGenerator; matcher/header.go HeaderMatcher (not ignoring case)."""
    if value == "*":
        header = {"name": ":method", "present_match": True}
    elif value.startswith("*"):
        header = {"name": ":method", "string_match": {"suffix": value[1:]}}
    elif value.endswith("*"):
        header = {"name": ":method", "string_match": {"prefix": value[:-1]}}
    else:
        header = {"name": ":method", "string_match": {"exact": value}}
    return {"header": header}


def _path(value: str) -> dict:
    """generator.go pathGenerator: with `{*}` or `{**}` (security.ContainsPathTemplate) a
    `uri_template` (matcher/template.go PathTemplateMatcher, permission.go
    permissionPathTemplate), else `url_path` (matcher/header.go PathMatcher)."""
    if MATCH_ONE in value or MATCH_ANY in value:
        # strings.NewReplacer("{*}", "*", "{**}", "**"): at each position the first old
        # string that matches; "{*}" never matches at the start of "{**}".
        template = re.sub(r"\{\*\*\}|\{\*\}", lambda m: "**" if m.group(0) == MATCH_ANY else "*", value)
        return {
            "uri_template": {
                "name": "uri-template",
                "typed_config": {"@type": URI_TEMPLATE_TYPE, "path_template": template},
            }
        }
    return {"url_path": {"path": _string_matcher(value)}}


def _check_valid_path_template(paths: list[str], where: str) -> None:
    """pkg/config/security CheckValidPathTemplate, which admission applies to every path."""
    for path in paths:
        contains_template = MATCH_ONE in path or MATCH_ANY in path
        found_match_any = False
        trimmed = path.strip("/")
        for glob in trimmed.split("/"):
            if glob == MATCH_ONE and not found_match_any:
                continue
            if glob == MATCH_ANY and not found_match_any:
                found_match_any = True
                continue
            if glob in (MATCH_ONE, MATCH_ANY) and found_match_any:
                raise ValueError(f"{where}: invalid or unsupported path {trimmed}: {{**}} is not the last operator")
            if "{" in glob or "}" in glob:
                raise ValueError(
                    f"{where}: invalid or unsupported path {trimmed}: contains '{{' or '}}' beyond a supported path template"
                )
            if contains_template and not _VALID_LITERAL.fullmatch(glob):
                raise ValueError(f"{where}: invalid or unsupported path {trimmed}: segment {glob!r} is not a valid literal")


def _replace_trust_domain_aliases(principals: list[str], trust_domains: tuple[str, ...]) -> list[str]:
    """trustdomain/bundle.go Bundle.ReplaceTrustDomainAliases."""
    out: list[str] = []
    for principal in principals:
        parts = principal.split("/")
        # isTrustDomainBeingEnforced: a SPIFFE-form principal whose trust domain is not "*".
        if len(parts) != 5 or parts[0] == "*":
            out.append(principal)
            continue
        from_principal = parts[0]
        if _td_string_match(from_principal, trust_domains) or from_principal == CLUSTER_LOCAL:
            # replaceTrustDomains
            aliases: list[str] = []
            for td in trust_domains:
                if _suffix_match(td, from_principal):
                    new = principal
                else:
                    new = "/".join([td, *parts[1:]])
                if new not in aliases:
                    aliases.append(new)
            out += aliases
        else:
            out.append(principal)
    return out


def _td_string_match(a: str, patterns: tuple[str, ...]) -> bool:
    """trustdomain/util.go stringMatch (the pattern on either side)."""
    return any(
        a == s or s == "*" or _prefix_match(a, s) or _prefix_match(s, a) or _suffix_match(a, s) or _suffix_match(s, a)
        for s in patterns
    )


def _prefix_match(a: str, pattern: str) -> bool:
    return pattern.endswith("*") and a.startswith(pattern[:-1])


def _suffix_match(a: str, pattern: str) -> bool:
    return pattern.startswith("*") and a.endswith(pattern[1:])
