//! The access rules that protect a proxy's workload, printed in the order its sidecar
//! evaluates them.

use std::fmt::Write as _;

use remora_model::config::{
    AccessRule, Authorization, Caller, IdentityMatch, PathMatch, ValueMatch,
};

pub(super) fn render(authz: &Authorization, out: &mut String) {
    let _ = writeln!(out, "  access rules, in the order they are evaluated");
    for r in &authz.deny {
        rule("deny", r, out);
    }
    match &authz.allow {
        Some(allow) => {
            for r in allow {
                rule("allow", r, out);
            }
            let _ = writeln!(out, "    otherwise deny: the workload has allow rules");
        }
        None => {
            let _ = writeln!(out, "    otherwise allow: the workload has no allow rule");
        }
    }
    for r in &authz.audit_deny {
        rule("audit deny", r, out);
    }
    if let Some(allow) = &authz.audit_allow {
        let names: Vec<&str> = allow.iter().map(|r| r.name.as_ref()).collect();
        let _ = writeln!(
            out,
            "    audit: count what none of {} allows",
            names.join(", ")
        );
    }
}

fn rule(action: &str, r: &AccessRule, out: &mut String) {
    let mut parts = vec![if r.from.is_empty() {
        "from anyone".to_owned()
    } else {
        let callers: Vec<String> = r.from.iter().map(caller).collect();
        format!("from {}", callers.join(" or "))
    }];
    if !r.ports.is_empty() {
        let ports: Vec<String> = r.ports.iter().map(u16::to_string).collect();
        parts.push(format!("port {}", ports.join(" or ")));
    }
    if let Some(http) = &r.http {
        if !http.methods.is_empty() {
            parts.push(http.methods.join(" or "));
        }
        let paths: Vec<String> = http
            .paths
            .iter()
            .map(|p| match p {
                PathMatch::Exact(p) => format!("path = {p}"),
                PathMatch::Prefix(p) => format!("path under {p}"),
                PathMatch::Any | PathMatch::Regex(_) => format!("path {p:?}"),
            })
            .collect();
        if !paths.is_empty() {
            parts.push(paths.join(" or "));
        }
        if !http.hosts.is_empty() {
            parts.push(format!("host {}", http.hosts.join(" or ")));
        }
        for h in &http.headers {
            parts.push(match &h.value {
                ValueMatch::Exact(v) => format!("header {}={v}", h.name),
                ValueMatch::Regex(v) => format!("header {}~{v}", h.name),
            });
        }
    }
    let _ = writeln!(out, "    {action} {}: {}", r.name, parts.join("; "));
}

fn caller(c: &Caller) -> String {
    let ids: Vec<String> = c
        .identities
        .iter()
        .map(|i| match i {
            IdentityMatch::Exact(id) => id.clone(),
            IdentityMatch::Prefix(p) => format!("{p}*"),
        })
        .collect();
    match (ids.is_empty(), c.authenticated) {
        (false, _) => ids.join(" or "),
        (true, Some(true)) => "authenticated callers".into(),
        (true, Some(false)) => "unauthenticated callers".into(),
        (true, None) => "anyone".into(),
    }
}
