//! The checks on an `AccessPolicy` that the schema cannot express.

use std::collections::BTreeSet;

use super::{AccessHttp, AccessPolicy, AccessPolicySpec, AccessRule, AccessSource, AccessTarget};
use crate::{
    spiffe::SpiffeId,
    traffic_route::{PathMatchType, StringMatchType},
    validation::{Problems, Validate, ValidationErrors, ValidationSettings, is_dns_label},
};

impl Validate for AccessPolicySpec {
    fn validate_with(&self, settings: &ValidationSettings) -> Result<(), ValidationErrors> {
        let mut p = Problems::new(settings);
        if let Some(s) = &self.selector {
            p.label_selector("spec.selector", s);
        }
        if self.rules.is_empty() {
            p.add(
                "spec.rules",
                "a policy needs at least one rule; add one, or delete the policy",
            );
        }
        let mut names = BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let path = format!("spec.rules[{i}]");
            p.dns_label(&format!("{path}.name"), &rule.name);
            if !names.insert(rule.name.as_str()) {
                p.add(
                    format!("{path}.name"),
                    format!(
                        "rule name {:?} is used twice in this policy; rule names must be unique",
                        rule.name
                    ),
                );
            }
            validate_rule(&mut p, &path, rule);
        }
        p.finish()
    }
}

impl Validate for AccessPolicy {
    fn validate_with(&self, settings: &ValidationSettings) -> Result<(), ValidationErrors> {
        self.spec.validate_with(settings)
    }
}

fn validate_rule(p: &mut Problems, path: &str, rule: &AccessRule) {
    for (j, source) in rule.from.iter().enumerate() {
        validate_source(p, &format!("{path}.from[{j}]"), source);
    }
    if let Some(to) = &rule.to {
        validate_target(p, &format!("{path}.to"), to);
    }
}

fn validate_source(p: &mut Problems, path: &str, s: &AccessSource) {
    let named =
        !(s.identities.is_empty() && s.service_accounts.is_empty() && s.namespaces.is_empty());
    if !named && s.authenticated.is_none() {
        p.add(
            path,
            "an empty entry matches every caller; name identities, serviceAccounts, namespaces or authenticated, or leave out `from`",
        );
    }
    if named && s.authenticated == Some(false) {
        p.add(
            format!("{path}.authenticated"),
            "callers named by identity, service account or namespace are authenticated; remove `authenticated: false` or the names",
        );
    }
    for (k, id) in s.identities.iter().enumerate() {
        if let Err(e) = id.parse::<SpiffeId>() {
            p.add(format!("{path}.identities[{k}]"), e.to_string());
        }
    }
    for (k, account) in s.service_accounts.iter().enumerate() {
        let ok = match account.split_once('/') {
            Some((ns, name)) => is_dns_label(ns) && is_subdomain(name),
            None => is_subdomain(account),
        };
        if !ok {
            p.add(
                format!("{path}.serviceAccounts[{k}]"),
                format!("{account:?} is not a service account: write <name> for one in the policy's namespace, or <namespace>/<name>"),
            );
        }
    }
    for (k, ns) in s.namespaces.iter().enumerate() {
        p.dns_label(&format!("{path}.namespaces[{k}]"), ns);
    }
}

fn validate_target(p: &mut Problems, path: &str, to: &AccessTarget) {
    p.port_list(&format!("{path}.ports"), &to.ports);
    if let Some(http) = &to.http {
        validate_http(p, &format!("{path}.http"), http);
    }
}

fn validate_http(p: &mut Problems, path: &str, http: &AccessHttp) {
    for (k, pm) in http.paths.iter().enumerate() {
        let vpath = format!("{path}.paths[{k}]");
        if pm.kind == PathMatchType::RegularExpression {
            p.add(
                format!("{vpath}.type"),
                "access rules match paths by Exact or PathPrefix; list the paths or prefixes instead of a regular expression",
            );
        } else if !pm.value.starts_with('/') {
            p.add(
                format!("{vpath}.value"),
                format!(
                    "{:?} must start with '/' (write \"/{}\")",
                    pm.value, pm.value
                ),
            );
        } else if pm.value.contains(['?', '#']) {
            p.add(
                format!("{vpath}.value"),
                "a path is compared without its query string; remove what follows '?' or '#'",
            );
        }
    }
    let mut methods = BTreeSet::new();
    for (k, m) in http.methods.iter().enumerate() {
        if !methods.insert(m) {
            p.add(
                format!("{path}.methods[{k}]"),
                format!("{} is listed twice; remove the duplicate", m.as_str()),
            );
        }
    }
    for (k, host) in http.hosts.iter().enumerate() {
        let name = host.strip_prefix("*.").unwrap_or(host);
        if !is_subdomain(name) {
            p.add(
                format!("{path}.hosts[{k}]"),
                format!("{host:?} is not a host name: write e.g. payments.shop.svc.cluster.local or *.example.com, without a port"),
            );
        }
    }
    let mut header_names = BTreeSet::new();
    for (k, h) in http.headers.iter().enumerate() {
        let hpath = format!("{path}.headers[{k}]");
        p.http_header_name(&format!("{hpath}.name"), &h.name);
        if !header_names.insert(h.name.to_ascii_lowercase()) {
            p.add(
                format!("{hpath}.name"),
                format!(
                    "header {:?} is matched twice; combine the conditions",
                    h.name
                ),
            );
        }
        if h.kind == StringMatchType::RegularExpression {
            p.regex(&format!("{hpath}.value"), &h.value);
        }
    }
}

/// A DNS-1123 subdomain: dot-separated labels, 253 characters at most.
fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{AccessPolicySpec, Validate, decode};

    fn problems(spec: serde_json::Value) -> Vec<(String, String)> {
        let spec: AccessPolicySpec = decode(spec).expect("decodes");
        match spec.validate() {
            Ok(()) => vec![],
            Err(e) => e.0.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    #[test]
    fn a_policy_with_every_field_is_valid() {
        let spec = json!({
            "selector": {"matchLabels": {"app": "payments"}},
            "mode": "Audit",
            "rules": [{
                "name": "orders-charge",
                "from": [{"identities": ["spiffe://cluster.local/ns/shop/sa/orders"]},
                         {"serviceAccounts": ["orders", "billing/invoices"], "namespaces": ["shop"]},
                         {"authenticated": false}],
                "to": {"ports": [8080], "http": {
                    "paths": [{"type": "Exact", "value": "/charge"}, {"value": "/refunds"}],
                    "methods": ["POST"], "hosts": ["payments", "*.shop.svc.cluster.local"],
                    "headers": [{"name": "x-tenant", "value": "a|b", "type": "RegularExpression"}]}}
            }, {"name": "no-legacy", "action": "Deny", "mode": "Enforce",
                "from": [{"serviceAccounts": ["legacy"]}]}]
        });
        assert_eq!(problems(spec), vec![]);
    }

    #[test]
    fn each_problem_names_its_field_and_the_fix() {
        let spec = json!({
            "selector": {"matchLabels": {"app": "no spaces"}},
            "rules": [{
                "name": "a",
                "from": [{}, {"identities": ["spiffe://cluster.local/ns/x"]},
                         {"serviceAccounts": ["a/b/c"], "authenticated": false}],
                "to": {"ports": [0, 80, 80], "http": {
                    "paths": [{"type": "RegularExpression", "value": "/.*"}, {"value": "charge"}],
                    "methods": ["GET", "GET"], "hosts": ["payments:8080"],
                    "headers": [{"name": "x a", "value": ""},
                                {"name": "x-b", "value": "(", "type": "RegularExpression"}]}}
            }, {"name": "a"}]
        });
        let found = problems(spec);
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.selector.matchLabels.app",
                "spec.rules[0].from[0]",
                "spec.rules[0].from[1].identities[0]",
                "spec.rules[0].from[2].authenticated",
                "spec.rules[0].from[2].serviceAccounts[0]",
                "spec.rules[0].to.ports[0]",
                "spec.rules[0].to.ports[2]",
                "spec.rules[0].to.http.paths[0].type",
                "spec.rules[0].to.http.paths[1].value",
                "spec.rules[0].to.http.methods[1]",
                "spec.rules[0].to.http.hosts[0]",
                "spec.rules[0].to.http.headers[0].name",
                "spec.rules[0].to.http.headers[1].value",
                "spec.rules[1].name",
            ],
            "{found:#?}"
        );
        assert!(found[1].1.contains("leave out `from`"), "{}", found[1].1);
        assert!(found[7].1.contains("Exact or PathPrefix"), "{}", found[7].1);
        assert!(found[13].1.contains("unique"), "{}", found[13].1);
    }

    #[test]
    fn a_policy_needs_a_rule() {
        let found = problems(json!({"rules": []}));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "spec.rules");
    }
}
