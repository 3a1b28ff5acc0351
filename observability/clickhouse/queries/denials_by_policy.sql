-- Which policies denied whom: denied requests (each once, by the hop that decided) and
-- connections (network mode), by the deciding policy, the filter and the caller.
-- `meshaudit summary`'s `denials` table.
SELECT multiIf(by = '', concat('(status ', if(code = 0, '-', toString(code)), ')'),
               deciding != '', deciding,
               by = 'ext_authz', if(ext_authz != '', ext_authz, '(ext_authz)'),
               basis = 'no_allow_policy_matched', '(no ALLOW policy matched)',
               basis = 'upstream', '(the application answered 403)',
               concat('(', basis, ')')) AS policy,
       if(by != '', by, '-') AS filter,
       who AS caller,
       ns AS namespace,
       count() AS denied,
       max(at) AS last
FROM (
    SELECT policy AS deciding, authz_by AS by, authz_basis AS basis, ext_authz_policy AS ext_authz,
           response_code AS code, caller AS who, namespace AS ns, ts_text AS at
    FROM meshaudit_request
    WHERE kind = 'denied'
    UNION ALL
    SELECT policy, authz_by, authz_basis, ext_authz_policy, response_code,
           if(caller != '', caller, '-'), if(namespace != '', namespace, '-'), ts_text
    FROM meshaudit_record FINAL
    WHERE kind = 'denied' AND connection = 1
)
GROUP BY policy, filter, caller, namespace
ORDER BY denied DESC, policy, filter, caller, namespace;
