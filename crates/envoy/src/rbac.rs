//! Access policies in Envoy's terms: the RBAC filters that enforce a workload's
//! [`Authorization`] on its inbound chains, and count what its audited rules would do.
//!
//! A chain gets up to two filters, in the order the rules are evaluated: the deny step
//! (enforced `Deny` rules with action `DENY`, audited ones as its shadow rules), then the
//! allow step (the enforced allow set with action `ALLOW`, and as its shadow the allow set
//! as it would be with the audited rules enforced). Envoy refuses an HTTP request with `403`
//! and the body `RBAC: access denied`, and closes a TCP connection. A step with neither
//! enforced nor shadow rules is left out; a request the deny step refuses never reaches the
//! allow step, whose shadow rules then say nothing about it.
//!
//! Each filter has its own stat prefixes, so its counters and its dynamic metadata never mix
//! with the other's. Whatever the filter's name, the metadata goes under
//! `envoy.filters.http.rbac` (or `envoy.filters.network.rbac`), keyed
//! `<shadow prefix>shadow_engine_result` (`allowed` or `denied`) and
//! `<shadow prefix>shadow_effective_policy_id` (the rule that decided, if one did); the HTTP
//! filter adds `<prefix>enforced_engine_result` and `<prefix>enforced_effective_policy_id`.
//! Each rule is a policy named by the rule (`<namespace>/<policy>/<rule>`), and the HTTP
//! filters count per rule: `http.<chain>.rbac.<prefix>.policy.<rule>.denied` (or `allowed`,
//! `shadow_denied`, `shadow_allowed`), beside `http.<chain>.rbac.<prefix>.denied` and the
//! like. Envoy's network filter has no per-rule counters, only
//! `tcp.<chain>.<prefix>.rbac.denied` (or `allowed`) and
//! `tcp.<chain>.<prefix>.rbac.<shadow prefix>.shadow_denied` (or `shadow_allowed`).
//!
//! A network filter sees a connection, not requests. An `Allow` rule with HTTP conditions
//! is left out of it and so allows nothing there; a `Deny` rule with HTTP conditions keeps
//! its caller and port conditions and denies on those alone: the safe side, as
//! `remora_api::AccessPolicy` documents. The network filter decides on the first bytes the
//! caller sends (Envoy 1.40 checks nothing before): a server that speaks first has written
//! its greeting to a caller that is then refused, and a caller that never sends is neither
//! refused nor audited.

use envoy_types::pb::{
    envoy::{
        config::{
            listener::v3::{Filter, filter},
            rbac::v3::{
                Permission, Policy, Principal, permission,
                principal::{self, Authenticated},
                rbac::Action,
            },
            route::v3::{HeaderMatcher, header_matcher::HeaderMatchSpecifier},
        },
        extensions::filters::{
            http::rbac::v3::{Rbac as HttpRbacConfig, RbacPerRoute as RbacPerRouteConfig},
            network::{
                http_connection_manager::v3::{HttpFilter, http_filter},
                rbac::v3::Rbac as NetworkRbacConfig,
            },
        },
        r#type::matcher::v3::{
            PathMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern,
        },
    },
    google::protobuf::Any,
};
use prost::{Message, Name};
use remora_model::config::{
    AccessRule, Authorization, Caller, HttpConditions, IdentityMatch, PathMatch,
};

use crate::route::{regex, string_matcher};

/// The stat prefix of the enforced deny rules, and of their dynamic metadata keys.
pub const DENY_PREFIX: &str = "remora_deny_";
/// The stat prefix of the enforced allow rules, and of their dynamic metadata keys.
pub const ALLOW_PREFIX: &str = "remora_allow_";
/// The stat prefix of the audited deny rules, and of their dynamic metadata keys.
pub const AUDIT_DENY_PREFIX: &str = "remora_audit_deny_";
/// The stat prefix of the allow rules as they would be with the audited ones enforced, and
/// of their dynamic metadata keys.
pub const AUDIT_ALLOW_PREFIX: &str = "remora_audit_allow_";
/// The name of the filter of the deny step, HTTP or network.
pub const DENY_FILTER: &str = "remora.rbac.deny";
/// The name of the filter of the allow step, HTTP or network.
pub const ALLOW_FILTER: &str = "remora.rbac.allow";

/// One of the two steps of evaluation, each a filter of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Deny,
    Allow,
}

/// What the filter can look at: requests, or only the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    Http,
    Connection,
}

impl Step {
    const ALL: [Step; 2] = [Step::Deny, Step::Allow];

    fn filter_name(self) -> &'static str {
        match self {
            Step::Deny => DENY_FILTER,
            Step::Allow => ALLOW_FILTER,
        }
    }

    /// The stat prefixes of the enforced rules and of the shadow rules.
    fn prefixes(self) -> (&'static str, &'static str) {
        match self {
            Step::Deny => (DENY_PREFIX, AUDIT_DENY_PREFIX),
            Step::Allow => (ALLOW_PREFIX, AUDIT_ALLOW_PREFIX),
        }
    }

    fn action(self) -> Action {
        match self {
            Step::Deny => Action::Deny,
            Step::Allow => Action::Allow,
        }
    }

    /// The step's enforced and shadow rules. No deny rules deny nothing, so an empty list is
    /// no engine; an empty allow set denies everything, so only `None` is none.
    fn rules(self, a: &Authorization) -> (Option<&[AccessRule]>, Option<&[AccessRule]>) {
        fn nonempty(rules: &[AccessRule]) -> Option<&[AccessRule]> {
            (!rules.is_empty()).then_some(rules)
        }
        match self {
            Step::Deny => (nonempty(&a.deny), nonempty(&a.audit_deny)),
            Step::Allow => (a.allow.as_deref(), a.audit_allow.as_deref()),
        }
    }

    /// The step's HTTP filter config, with these rules (the prefixes are the same with or
    /// without them, so the metadata keys do not depend on which config Envoy reads).
    fn http(self, enforced: Option<&[AccessRule]>, shadow: Option<&[AccessRule]>) -> HttpRbac {
        let (rules_stat_prefix, shadow_rules_stat_prefix) = self.prefixes();
        HttpRbac {
            rules: enforced.map(|r| self.engine(r, Layer::Http)),
            shadow_rules: shadow.map(|r| self.engine(r, Layer::Http)),
            shadow_rules_stat_prefix: shadow_rules_stat_prefix.to_owned(),
            rules_stat_prefix: rules_stat_prefix.to_owned(),
            track_per_rule_stats: true,
        }
    }

    /// The engine of `rules`, as the filter's `rules` or `shadow_rules`.
    fn engine(self, rules: &[AccessRule], layer: Layer) -> OrderedRbac {
        OrderedRbac {
            action: self.action() as i32,
            policies: rules
                .iter()
                .filter_map(|r| {
                    policy(r, self, layer).map(|value| PolicyEntry {
                        key: r.name.to_string(),
                        value: Some(value),
                    })
                })
                .collect(),
        }
    }
}

/// The RBAC filters of an inbound HTTP connection manager, to go before every other filter:
/// the deny step, then the allow step, neither with rules of its own. The rules come per
/// route ([`per_route`]), so the listener stays the same when they change and the open
/// connections take the new rules at once.
pub(crate) fn http_filters() -> Vec<HttpFilter> {
    Step::ALL
        .into_iter()
        .map(|step| HttpFilter {
            name: step.filter_name().to_owned(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                packed::<HttpRbacConfig>(&step.http(None, None)),
            )),
            ..Default::default()
        })
        .collect()
}

/// The rules of `authz` for [`http_filters`], each step's as its filter's per-route config
/// (`None` for a step without rules, which then enforces nothing).
pub(crate) fn per_route(authz: &Authorization) -> [(&'static str, Option<Any>); 2] {
    Step::ALL.map(|step| {
        let (enforced, shadow) = step.rules(authz);
        let config = (enforced.is_some() || shadow.is_some()).then(|| {
            let rbac = step.http(enforced, shadow);
            packed::<RbacPerRouteConfig>(&RbacPerRoute { rbac: Some(rbac) })
        });
        (step.filter_name(), config)
    })
}

/// The RBAC filters of a chain that proxies TCP, to go before the TCP proxy whose stat
/// prefix is `stat_prefix`. Envoy's network RBAC keeps no counters per rule, so each
/// enforced deny rule is a filter of its own, counting under
/// `tcp.<stat_prefix>.remora_deny_.policy.<rule>.rbac.`; the audited deny rules follow in one
/// filter (its shadow verdict is one set of metadata keys), then the allow step, under
/// `tcp.<stat_prefix>.<prefix>.rbac.`.
pub(crate) fn network_filters(authz: &Authorization, stat_prefix: &str) -> Vec<Filter> {
    let (deny, audit_deny) = Step::Deny.rules(authz);
    let per_rule = deny.unwrap_or_default().iter().map(|rule| NetworkRbac {
        rules: Some(Step::Deny.engine(std::slice::from_ref(rule), Layer::Connection)),
        shadow_rules: None,
        stat_prefix: format!("tcp.{stat_prefix}.{DENY_PREFIX}.policy.{}.", rule.name),
        shadow_rules_stat_prefix: String::new(),
    });
    let audited = audit_deny.map(|rules| NetworkRbac {
        rules: None,
        shadow_rules: Some(Step::Deny.engine(rules, Layer::Connection)),
        stat_prefix: format!("tcp.{stat_prefix}.{DENY_PREFIX}"),
        shadow_rules_stat_prefix: AUDIT_DENY_PREFIX.to_owned(),
    });
    let (allow, audit_allow) = Step::Allow.rules(authz);
    let allowed = (allow.is_some() || audit_allow.is_some()).then(|| NetworkRbac {
        rules: allow.map(|r| Step::Allow.engine(r, Layer::Connection)),
        shadow_rules: audit_allow.map(|r| Step::Allow.engine(r, Layer::Connection)),
        stat_prefix: format!("tcp.{stat_prefix}.{ALLOW_PREFIX}"),
        shadow_rules_stat_prefix: AUDIT_ALLOW_PREFIX.to_owned(),
    });
    let deny_filters = per_rule.chain(audited).map(|c| (DENY_FILTER, c));
    deny_filters
        .chain(allowed.map(|c| (ALLOW_FILTER, c)))
        .map(|(name, config)| Filter {
            name: name.to_owned(),
            config_type: Some(filter::ConfigType::TypedConfig(
                packed::<NetworkRbacConfig>(&config),
            )),
        })
        .collect()
}

/// `config`, encoded as its ordered mirror, packed as Envoy's type `T`.
fn packed<T: Name>(config: &impl Message) -> Any {
    Any {
        type_url: T::type_url(),
        value: config.encode_to_vec(),
    }
}

/// One rule as a policy of `step`'s engine; `None` for an allow rule a connection cannot
/// satisfy, since its conditions are on requests.
fn policy(rule: &AccessRule, step: Step, layer: Layer) -> Option<Policy> {
    let http = match (layer, &rule.http) {
        (Layer::Http, http) => http.as_ref(),
        (Layer::Connection, None) => None,
        (Layer::Connection, Some(_)) if step == Step::Allow => return None,
        // A deny rule keeps its caller and port conditions: the connection is refused.
        (Layer::Connection, Some(_)) => None,
    };
    let mut all: Vec<Permission> = Vec::new();
    if !rule.ports.is_empty() {
        let ports = rule
            .ports
            .iter()
            .map(|p| perm(permission::Rule::DestinationPort(u32::from(*p))));
        all.push(any_permission(ports.collect()));
    }
    all.extend(http.map(http_permissions).into_iter().flatten());
    let principals = match rule.from.as_slice() {
        [] => vec![any_principal()],
        from => from.iter().map(caller).collect(),
    };
    Some(Policy {
        permissions: vec![all_permissions(all)],
        principals,
        ..Default::default()
    })
}

/// The conditions on a request, each one a permission the request must satisfy.
fn http_permissions(h: &HttpConditions) -> Vec<Permission> {
    let mut all = Vec::new();
    if !h.paths.is_empty() {
        all.push(any_permission(h.paths.iter().flat_map(path).collect()));
    }
    if !h.methods.is_empty() {
        let methods = h.methods.iter().map(|m| header(":method", exact(m)));
        all.push(any_permission(methods.collect()));
    }
    if !h.hosts.is_empty() {
        all.push(any_permission(
            h.hosts.iter().flat_map(|h| host(h)).collect(),
        ));
    }
    all.extend(
        h.headers
            .iter()
            .map(|m| header(&m.name, string_matcher(&m.value))),
    );
    all
}

/// The path conditions of one path match, any one. A prefix is whole segments, as in
/// routes: `/api` (or `/api/`) is `/api` and what lies under `/api/`, never `/apis`.
fn path(p: &PathMatch) -> Vec<Permission> {
    let url_path = |pattern| {
        perm(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: false,
            })),
        }))
    };
    match p {
        PathMatch::Any => vec![url_path(MatchPattern::Prefix("/".to_owned()))],
        PathMatch::Exact(p) => vec![url_path(MatchPattern::Exact(p.clone()))],
        PathMatch::Prefix(p) => match p.trim_end_matches('/') {
            "" => vec![url_path(MatchPattern::Prefix("/".to_owned()))],
            p => vec![
                url_path(MatchPattern::Exact(p.to_owned())),
                url_path(MatchPattern::Prefix(format!("{p}/"))),
            ],
        },
        PathMatch::Regex(r) => vec![url_path(MatchPattern::SafeRegex(regex(r)))],
    }
}

/// The `:authority` conditions of one host, any one: the host alone or followed by a port,
/// in any case. `*.<domain>` takes one or more labels before the domain.
///
/// No regex: a host name may be long enough that its regex outgrows the program size the
/// proxies allow. For an authority `<host>[:<port>]`, a suffix `.<domain>` without a port,
/// or `.<domain>:` within it, is exactly a host ending in the domain; and whatever a caller
/// writes, a host ending in the domain matches, so a deny rule cannot be slipped past.
fn host(h: &str) -> Vec<Permission> {
    let authority = |pattern| {
        header(
            ":authority",
            StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: true,
            },
        )
    };
    match h.strip_prefix("*.") {
        Some(domain) => vec![
            authority(MatchPattern::Suffix(format!(".{domain}"))),
            authority(MatchPattern::Contains(format!(".{domain}:"))),
        ],
        None => vec![
            authority(MatchPattern::Exact(h.to_owned())),
            authority(MatchPattern::Prefix(format!("{h}:"))),
        ],
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.to_owned())),
        ignore_case: false,
    }
}

/// A header that must be present and match.
fn header(name: &str, m: StringMatcher) -> Permission {
    perm(permission::Rule::Header(HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(m)),
        ..Default::default()
    }))
}

/// One entry of `from`: all of its conditions. Identities imply a certificate, so a
/// caller with identities needs no separate `authenticated`.
fn caller(c: &Caller) -> Principal {
    let mut all = Vec::new();
    if !c.identities.is_empty() {
        let ids = c.identities.iter().map(|id| {
            let pattern = match id {
                IdentityMatch::Exact(s) => MatchPattern::Exact(s.clone()),
                IdentityMatch::Prefix(s) => MatchPattern::Prefix(s.clone()),
            };
            authenticated(Some(StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: false,
            }))
        });
        all.push(any_principal_of(ids.collect()));
    }
    match c.authenticated {
        Some(true) if c.identities.is_empty() => all.push(authenticated(None)),
        Some(false) => all.push(principal(principal::Identifier::NotId(Box::new(
            authenticated(None),
        )))),
        _ => {}
    }
    all_principals(all)
}

/// A caller with a certificate the chain verified, whose URI SAN matches `name` if given.
fn authenticated(name: Option<StringMatcher>) -> Principal {
    principal(principal::Identifier::Authenticated(Authenticated {
        principal_name: name,
    }))
}

fn perm(rule: permission::Rule) -> Permission {
    Permission { rule: Some(rule) }
}

fn principal(id: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(id),
    }
}

fn any_principal() -> Principal {
    principal(principal::Identifier::Any(true))
}

/// Every one of `all`; none: anything.
fn all_permissions(all: Vec<Permission>) -> Permission {
    combine(
        all,
        || perm(permission::Rule::Any(true)),
        |rules| perm(permission::Rule::AndRules(permission::Set { rules })),
    )
}

/// Any one of `any`, which is never empty.
fn any_permission(any: Vec<Permission>) -> Permission {
    combine(
        any,
        || perm(permission::Rule::Any(true)),
        |rules| perm(permission::Rule::OrRules(permission::Set { rules })),
    )
}

/// Every one of `all`; none: anyone.
fn all_principals(all: Vec<Principal>) -> Principal {
    combine(all, any_principal, |ids| {
        principal(principal::Identifier::AndIds(principal::Set { ids }))
    })
}

/// Any one of `any`, which is never empty.
fn any_principal_of(any: Vec<Principal>) -> Principal {
    combine(any, any_principal, |ids| {
        principal(principal::Identifier::OrIds(principal::Set { ids }))
    })
}

/// One condition is itself, several are a set, none is `none`. Sets of one are avoided, so
/// the config reads as the rule does.
fn combine<T>(items: Vec<T>, none: impl FnOnce() -> T, set: impl FnOnce(Vec<T>) -> T) -> T {
    match <[T; 1]>::try_from(items) {
        Ok([one]) => one,
        Err(items) if items.is_empty() => none(),
        Err(items) => set(items),
    }
}

// Envoy's RBAC configs, spelled out with a list where the generated `RBAC.policies` is a
// `HashMap`: a map is a repeated key/value message on the wire, so Envoy reads the same
// thing, but prost would write the entries in hash order, and equal rules must give equal
// bytes. The entries keep the model's order of the rules.

/// `envoy.config.rbac.v3.RBAC`.
#[derive(Clone, PartialEq, Message)]
struct OrderedRbac {
    /// `action`, an `rbac::Action`.
    #[prost(int32, tag = "1")]
    action: i32,
    /// `policies`, one map entry per element.
    #[prost(message, repeated, tag = "2")]
    policies: Vec<PolicyEntry>,
}

/// An entry of `RBAC.policies`.
#[derive(Clone, PartialEq, Message)]
struct PolicyEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Policy>,
}

/// `envoy.extensions.filters.http.rbac.v3.RBAC`.
#[derive(Clone, PartialEq, Message)]
struct HttpRbac {
    #[prost(message, optional, tag = "1")]
    rules: Option<OrderedRbac>,
    #[prost(message, optional, tag = "2")]
    shadow_rules: Option<OrderedRbac>,
    #[prost(string, tag = "3")]
    shadow_rules_stat_prefix: String,
    #[prost(string, tag = "6")]
    rules_stat_prefix: String,
    #[prost(bool, tag = "7")]
    track_per_rule_stats: bool,
}

/// `envoy.extensions.filters.http.rbac.v3.RBACPerRoute`.
#[derive(Clone, PartialEq, Message)]
struct RbacPerRoute {
    #[prost(message, optional, tag = "2")]
    rbac: Option<HttpRbac>,
}

/// `envoy.extensions.filters.network.rbac.v3.RBAC`.
#[derive(Clone, PartialEq, Message)]
struct NetworkRbac {
    #[prost(message, optional, tag = "1")]
    rules: Option<OrderedRbac>,
    #[prost(message, optional, tag = "2")]
    shadow_rules: Option<OrderedRbac>,
    #[prost(string, tag = "3")]
    stat_prefix: String,
    #[prost(string, tag = "5")]
    shadow_rules_stat_prefix: String,
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::{
        config::rbac::v3::Rbac,
        extensions::filters::network::http_connection_manager::v3::HttpConnectionManager,
    };
    use remora_model::config::{
        Direction, ListenerProtocol, StringMatch, Target, ValueMatch, WeightedCluster,
    };

    use super::*;
    use crate::listener::{Chain, network_filters};

    fn rule(name: &str) -> AccessRule {
        AccessRule {
            name: name.into(),
            from: Vec::new(),
            ports: Vec::new(),
            http: None,
        }
    }

    fn http_rule(name: &str, http: HttpConditions) -> AccessRule {
        AccessRule {
            http: Some(http),
            ..rule(name)
        }
    }

    fn paths(paths: &[PathMatch]) -> HttpConditions {
        HttpConditions {
            paths: paths.to_vec(),
            ..Default::default()
        }
    }

    fn identity(id: &str) -> Caller {
        Caller {
            identities: vec![IdentityMatch::Exact(id.to_owned())],
            authenticated: Some(true),
        }
    }

    fn unauthenticated() -> Caller {
        Caller {
            identities: Vec::new(),
            authenticated: Some(false),
        }
    }

    /// The connection manager of an inbound HTTP chain.
    fn http_chain() -> HttpConnectionManager {
        let protocol = ListenerProtocol::Http {
            route_config: "inbound|8080".into(),
        };
        let chain = Chain {
            direction: Direction::Inbound,
            mtls: true,
            authz: None,
        };
        let [f] = network_filters("inbound_8080".into(), &protocol, vec![], chain)
            .try_into()
            .expect("one network filter");
        let Some(filter::ConfigType::TypedConfig(any)) = f.config_type else {
            panic!("typed config expected");
        };
        HttpConnectionManager::decode(any.value.as_slice()).expect("hcm")
    }

    fn tcp_chain(authz: &Authorization) -> Vec<Filter> {
        let clusters = vec![WeightedCluster {
            target: Target::Cluster("inbound|5432".into()),
            weight: 1,
        }];
        let protocol = ListenerProtocol::Tcp { clusters };
        let chain = Chain {
            direction: Direction::Inbound,
            mtls: false,
            authz: Some(authz),
        };
        network_filters("inbound_5432".into(), &protocol, vec![], chain)
    }

    /// Each step's per-route config of `authz`, decoded with Envoy's own type.
    fn per_route_rbac(authz: &Authorization) -> [Option<HttpRbacConfig>; 2] {
        per_route(authz).map(|(_, any)| {
            let any = any?;
            assert_eq!(any.type_url, RbacPerRouteConfig::type_url());
            RbacPerRouteConfig::decode(any.value.as_slice())
                .expect("per route")
                .rbac
        })
    }

    fn names<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
        names.into_iter().map(String::as_str).collect()
    }

    /// An HTTP RBAC filter's config, decoded with Envoy's own type.
    fn http_rbac(f: &HttpFilter) -> HttpRbacConfig {
        let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("{}: typed config expected", f.name);
        };
        assert_eq!(any.type_url, HttpRbacConfig::type_url());
        HttpRbacConfig::decode(any.value.as_slice()).expect("http rbac")
    }

    fn network_rbac(f: &Filter) -> NetworkRbacConfig {
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("{}: typed config expected", f.name);
        };
        assert_eq!(any.type_url, NetworkRbacConfig::type_url());
        NetworkRbacConfig::decode(any.value.as_slice()).expect("network rbac")
    }

    /// An engine's action and its policies' names, sorted.
    fn engine(rbac: &Option<Rbac>) -> Option<(Action, Vec<&str>)> {
        rbac.as_ref().map(|r| {
            let mut names: Vec<&str> = r.policies.keys().map(String::as_str).collect();
            names.sort_unstable();
            (r.action(), names)
        })
    }

    fn url_path(pattern: MatchPattern) -> Permission {
        perm(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: false,
            })),
        }))
    }

    #[test]
    fn an_http_chain_denies_then_allows_before_its_fault_filter_and_router() {
        let no_admin = http_rule(
            "shop/guard/no-admin",
            paths(&[PathMatch::Prefix("/admin".into())]),
        );
        let orders = AccessRule {
            from: vec![identity("spiffe://cluster.local/ns/shop/sa/orders")],
            ..rule("shop/api/orders")
        };
        let authz = Authorization {
            deny: vec![no_admin],
            allow: Some(vec![orders.clone()]),
            audit_deny: vec![rule("shop/trial/deny-all")],
            audit_allow: Some(vec![orders, rule("shop/trial/anyone")]),
        };
        let hcm = http_chain();
        let filters = names(hcm.http_filters.iter().map(|f| &f.name));
        assert_eq!(
            filters,
            [
                DENY_FILTER,
                ALLOW_FILTER,
                "envoy.filters.http.fault",
                "envoy.filters.http.router"
            ]
        );
        assert_eq!(hcm.normalize_path.map(|b| b.value), Some(true));
        assert!(hcm.merge_slashes);

        // The listener's filters enforce nothing themselves: the rules come with the routes,
        // under the same prefixes.
        for (f, prefixes) in hcm.http_filters.iter().zip([
            (DENY_PREFIX, AUDIT_DENY_PREFIX),
            (ALLOW_PREFIX, AUDIT_ALLOW_PREFIX),
        ]) {
            let base = http_rbac(f);
            assert_eq!(
                (base.rules.clone(), base.shadow_rules.clone()),
                (None, None)
            );
            assert_eq!(
                (
                    base.rules_stat_prefix.as_str(),
                    base.shadow_rules_stat_prefix.as_str()
                ),
                prefixes
            );
            assert!(base.track_per_rule_stats);
        }
        let [deny, allow] = per_route_rbac(&authz);
        let deny = deny.expect("the deny step's rules");
        assert_eq!(
            (
                deny.rules_stat_prefix.as_str(),
                deny.shadow_rules_stat_prefix.as_str()
            ),
            (DENY_PREFIX, AUDIT_DENY_PREFIX)
        );
        assert!(deny.track_per_rule_stats);
        assert_eq!(
            engine(&deny.rules),
            Some((Action::Deny, vec!["shop/guard/no-admin"]))
        );
        assert_eq!(
            engine(&deny.shadow_rules),
            Some((Action::Deny, vec!["shop/trial/deny-all"]))
        );
        let no_admin = &deny.rules.as_ref().expect("rules").policies["shop/guard/no-admin"];
        assert_eq!(
            no_admin.permissions,
            [any_permission(vec![
                url_path(MatchPattern::Exact("/admin".into())),
                url_path(MatchPattern::Prefix("/admin/".into())),
            ])],
            "whole segments: /admin and under /admin/, never /admins"
        );
        assert_eq!(no_admin.principals, [any_principal()]);

        let allow = allow.expect("the allow step's rules");
        assert_eq!(
            (
                allow.rules_stat_prefix.as_str(),
                allow.shadow_rules_stat_prefix.as_str()
            ),
            (ALLOW_PREFIX, AUDIT_ALLOW_PREFIX)
        );
        assert!(allow.track_per_rule_stats);
        assert_eq!(
            engine(&allow.rules),
            Some((Action::Allow, vec!["shop/api/orders"]))
        );
        assert_eq!(
            engine(&allow.shadow_rules),
            Some((Action::Allow, vec!["shop/api/orders", "shop/trial/anyone"]))
        );
        let orders = &allow.rules.as_ref().expect("rules").policies["shop/api/orders"];
        assert_eq!(orders.permissions, [perm(permission::Rule::Any(true))]);
        assert_eq!(
            orders.principals,
            [authenticated(Some(exact(
                "spiffe://cluster.local/ns/shop/sa/orders"
            )))]
        );
    }

    #[test]
    fn a_tcp_chain_leaves_out_http_allow_rules_and_denies_on_the_rest_of_http_deny_rules() {
        let get = HttpConditions {
            methods: vec!["GET"],
            ..Default::default()
        };
        let plaintext_gets = AccessRule {
            from: vec![unauthenticated()],
            ports: vec![5432, 6432],
            ..http_rule("shop/guard/no-plaintext-get", get.clone())
        };
        let reads = http_rule("shop/api/reads", get);
        let admin = AccessRule {
            from: vec![identity("spiffe://cluster.local/ns/ops/sa/admin")],
            ..rule("shop/api/admin")
        };
        let authz = Authorization {
            deny: vec![plaintext_gets],
            allow: Some(vec![reads.clone(), admin]),
            audit_deny: Vec::new(),
            audit_allow: Some(vec![reads]),
        };
        let filters = tcp_chain(&authz);
        let [deny, allow, _] = filters.as_slice() else {
            panic!("two RBAC filters and the TCP proxy expected");
        };
        assert_eq!(
            names(filters.iter().map(|f| &f.name)),
            [DENY_FILTER, ALLOW_FILTER, "envoy.filters.network.tcp_proxy"]
        );

        let deny = network_rbac(deny);
        assert_eq!(
            deny.stat_prefix, "tcp.inbound_5432.remora_deny_.policy.shop/guard/no-plaintext-get.",
            "a deny rule counts under its own name"
        );
        assert_eq!(deny.shadow_rules, None);
        let policy = &deny.rules.as_ref().expect("rules").policies["shop/guard/no-plaintext-get"];
        assert_eq!(
            policy.permissions,
            [any_permission(vec![
                perm(permission::Rule::DestinationPort(5432)),
                perm(permission::Rule::DestinationPort(6432)),
            ])],
            "the ports alone: a connection carries no method"
        );
        assert_eq!(
            policy.principals,
            [principal(principal::Identifier::NotId(Box::new(
                authenticated(None)
            )))]
        );

        let allow = network_rbac(allow);
        assert_eq!(allow.stat_prefix, "tcp.inbound_5432.remora_allow_");
        assert_eq!(allow.shadow_rules_stat_prefix, AUDIT_ALLOW_PREFIX);
        assert_eq!(
            engine(&allow.rules),
            Some((Action::Allow, vec!["shop/api/admin"]))
        );
        assert_eq!(
            engine(&allow.shadow_rules),
            Some((Action::Allow, vec![])),
            "an HTTP rule allows no connection: the audited set allows none"
        );
    }

    #[test]
    fn a_step_without_rules_enforces_nothing_and_an_empty_allow_set_denies_everything() {
        let audit_only = Authorization {
            audit_deny: vec![rule("shop/trial/deny-all")],
            ..Default::default()
        };
        let [deny, allow] = per_route_rbac(&audit_only);
        assert_eq!(
            allow, None,
            "no allow rule: the allow step enforces nothing"
        );
        let deny = deny.expect("the deny step's audit rules");
        assert_eq!(deny.rules, None, "nothing enforced");
        assert!(deny.shadow_rules.is_some());

        let nobody = Authorization {
            allow: Some(Vec::new()),
            ..Default::default()
        };
        let filters = tcp_chain(&nobody);
        assert_eq!(
            names(filters.iter().map(|f| &f.name)),
            [ALLOW_FILTER, "envoy.filters.network.tcp_proxy"]
        );
        assert_eq!(
            engine(&network_rbac(&filters[0]).rules),
            Some((Action::Allow, vec![]))
        );
    }

    #[test]
    fn request_conditions_all_hold_each_by_any_of_its_values() {
        let http = HttpConditions {
            paths: vec![
                PathMatch::Exact("/healthz".into()),
                PathMatch::Prefix("/".into()),
            ],
            methods: vec!["GET", "POST"],
            hosts: vec!["api.shop".into(), "*.example.com".into()],
            headers: vec![
                StringMatch {
                    name: "x-env".into(),
                    value: ValueMatch::Exact("prod".into()),
                },
                StringMatch {
                    name: "x-id".into(),
                    value: ValueMatch::Regex("[0-9]+".into()),
                },
            ],
        };
        let authority = |pattern| {
            header(
                ":authority",
                StringMatcher {
                    match_pattern: Some(pattern),
                    ignore_case: true,
                },
            )
        };
        let policy = policy(&http_rule("shop/api/all", http), Step::Allow, Layer::Http);
        let expected = all_permissions(vec![
            any_permission(vec![
                url_path(MatchPattern::Exact("/healthz".into())),
                url_path(MatchPattern::Prefix("/".into())),
            ]),
            any_permission(vec![
                header(":method", exact("GET")),
                header(":method", exact("POST")),
            ]),
            any_permission(vec![
                authority(MatchPattern::Exact("api.shop".into())),
                authority(MatchPattern::Prefix("api.shop:".into())),
                authority(MatchPattern::Suffix(".example.com".into())),
                authority(MatchPattern::Contains(".example.com:".into())),
            ]),
            header("x-env", exact("prod")),
            header(
                "x-id",
                StringMatcher {
                    match_pattern: Some(MatchPattern::SafeRegex(regex("[0-9]+"))),
                    ignore_case: false,
                },
            ),
        ]);
        assert_eq!(policy.expect("a policy").permissions, [expected]);
    }

    #[test]
    fn callers_are_any_one_entry_each_with_all_its_conditions() {
        let namespace = Caller {
            identities: vec![
                IdentityMatch::Exact("spiffe://cluster.local/ns/ops/sa/admin".into()),
                IdentityMatch::Prefix("spiffe://cluster.local/ns/shop/sa/".into()),
            ],
            authenticated: Some(true),
        };
        let any_certificate = Caller {
            identities: Vec::new(),
            authenticated: Some(true),
        };
        let r = AccessRule {
            from: vec![namespace, any_certificate, unauthenticated()],
            ..rule("shop/api/callers")
        };
        let prefix = StringMatcher {
            match_pattern: Some(MatchPattern::Prefix(
                "spiffe://cluster.local/ns/shop/sa/".into(),
            )),
            ignore_case: false,
        };
        let policy = policy(&r, Step::Deny, Layer::Connection).expect("a policy");
        assert_eq!(
            policy.principals,
            [
                any_principal_of(vec![
                    authenticated(Some(exact("spiffe://cluster.local/ns/ops/sa/admin"))),
                    authenticated(Some(prefix)),
                ]),
                authenticated(None),
                principal(principal::Identifier::NotId(Box::new(authenticated(None)))),
            ]
        );
    }

    /// Prost writes a `HashMap` in hash order; the ordered mirror writes the rules in the
    /// model's order, the same bytes every time, which Envoy's type reads back whole.
    #[test]
    fn policies_encode_alike_every_time_in_rule_order() {
        let rules: Vec<AccessRule> = (0..16)
            .map(|i| AccessRule {
                ports: vec![8000 + i],
                ..rule(&format!("shop/api/r{i:02}"))
            })
            .collect();
        let authz = Authorization {
            allow: Some(rules.clone()),
            ..Default::default()
        };
        let first = tcp_chain(&authz);
        assert_eq!(first, tcp_chain(&authz));
        let Some(filter::ConfigType::TypedConfig(any)) = &first[0].config_type else {
            panic!("typed config expected");
        };
        let mirror = NetworkRbac::decode(any.value.as_slice()).expect("mirror");
        let order: Vec<&str> = mirror
            .rules
            .iter()
            .flat_map(|r| &r.policies)
            .map(|p| p.key.as_str())
            .collect();
        let expected: Vec<&str> = rules.iter().map(|r| &*r.name).collect();
        assert_eq!(order, expected);
        let envoy = network_rbac(&first[0]);
        assert_eq!(envoy.rules.expect("rules").policies.len(), 16);
    }

    #[test]
    fn combining_one_condition_gives_the_condition_itself() {
        let port = perm(permission::Rule::DestinationPort(80));
        assert_eq!(all_permissions(vec![port.clone()]), port);
        assert_eq!(any_permission(vec![port.clone()]), port);
        assert_eq!(all_permissions(vec![]), perm(permission::Rule::Any(true)));
        assert_eq!(all_principals(vec![]), any_principal());
    }
}
