//! Route configurations: virtual hosts per Service port, one Envoy route per match.

use envoy_types::pb::envoy::{
    config::{
        core::v3::{
            HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
            header_value_option::HeaderAppendAction,
        },
        route::v3::{
            self as pb, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy,
            RouteAction, RouteConfiguration,
            header_matcher::HeaderMatchSpecifier,
            query_parameter_matcher::QueryParameterMatchSpecifier,
            redirect_action::{self, RedirectResponseCode},
            retry_policy::RetryBackOff,
            route, route_action,
            route_match::PathSpecifier,
            weighted_cluster::ClusterWeight,
        },
    },
    extensions::filters::{
        common::fault::v3::{FaultDelay, fault_delay::FaultDelaySecifier},
        http::fault::v3::{FaultAbort, HttpFault, fault_abort::ErrorType},
    },
    r#type::matcher::v3::{
        RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher::MatchPattern,
    },
};
use prost::{Message, encoding};
use remora_model::config::{
    self, Authorization, Fault, Forward, HeaderChanges, PathMatch, PathRewrite, Redirect,
    RouteMatch, StringMatch, Target, ValueMatch,
};

use crate::{cluster_name, encoded::Encoded, listener::FAULT_FILTER, proto, rbac, split};

pub(crate) fn route_configuration(rc: &config::RouteConfig) -> RouteConfiguration {
    RouteConfiguration {
        name: rc.name.to_string(),
        virtual_hosts: rc
            .virtual_hosts
            .iter()
            .map(|vh| virtual_host(&vh.value))
            .collect(),
        ..Default::default()
    }
}

fn virtual_host(vh: &config::VirtualHost) -> pb::VirtualHost {
    let mut host = pb::VirtualHost {
        name: vh.name.to_string(),
        domains: vh.domains.clone(),
        routes: vh.routes.iter().flat_map(routes).collect(),
        ..Default::default()
    };
    if let Some(authz) = &vh.authz {
        with_access_rules(&mut host, authz);
    }
    host
}

/// The access rules of an inbound host, as the per-route configs of the RBAC filters: the
/// deny step's on the host, the allow step's on each route (inbound routes inject no
/// faults). One entry per map, because prost writes a map in hash order and a resource's
/// bytes must be the same every time.
fn with_access_rules(host: &mut pb::VirtualHost, authz: &Authorization) {
    let [(deny_filter, deny), (allow_filter, allow)] = rbac::per_route(authz);
    host.typed_per_filter_config = deny
        .map(|c| (deny_filter.to_owned(), c))
        .into_iter()
        .collect();
    if let Some(allow) = allow {
        for r in &mut host.routes {
            r.typed_per_filter_config = [(allow_filter.to_owned(), allow.clone())].into();
        }
    }
}

/// Virtual hosts encoded once each, by content hash. A route config holds a host for every
/// Service on its port (a thousand in a large mesh), and a change to one Service's routes
/// leaves the others as they were: the next encoding of the config costs the changed host
/// and a concatenation, not a thousand translations.
pub type VirtualHostCache = Encoded<u64>;

impl VirtualHostCache {
    /// The encoding of `rc`, the same bytes as encoding [`route_configuration`]'s message:
    /// a `RouteConfiguration` with only its name and virtual hosts set is the name field
    /// followed by one length-delimited field per host.
    pub(crate) fn route_configuration(&mut self, rc: &config::RouteConfig) -> Vec<u8> {
        const NAME: u32 = 1;
        const VIRTUAL_HOSTS: u32 = 2;
        let name = rc.name.to_string();
        // Sized exactly first: the bytes are kept as the resource's for as long as proxies
        // hold it, and a vector grown by doubling would keep up to as much again unused.
        let mut len = if name.is_empty() {
            0
        } else {
            encoding::string::encoded_len(NAME, &name)
        };
        for vh in rc.virtual_hosts.iter() {
            let bytes = self.get_or_encode(vh.hash, || virtual_host(&vh.value).encode_to_vec());
            len += proto::field_len(VIRTUAL_HOSTS, bytes.len());
        }
        let mut out = Vec::with_capacity(len);
        if !name.is_empty() {
            encoding::string::encode(NAME, &name, &mut out);
        }
        for vh in rc.virtual_hosts.iter() {
            proto::put_field(VIRTUAL_HOSTS, self.get(&vh.hash), &mut out);
        }
        out
    }
}

/// An Envoy route has one match, so a rule with several (any of which takes the request)
/// becomes one route per match, all doing the same thing; a rule with none matches all.
fn routes(r: &config::Route) -> Vec<pb::Route> {
    if r.matches.is_empty() {
        vec![route(r, &RouteMatch::default())]
    } else {
        r.matches.iter().map(|m| route(r, m)).collect()
    }
}

fn route(r: &config::Route, m: &RouteMatch) -> pb::Route {
    let action = match &r.action {
        config::RouteAction::Forward(f) => {
            route::Action::Route(route_action(f, &m.path, host_header(&r.request_headers)))
        }
        config::RouteAction::Redirect(rd) => route::Action::Redirect(redirect(rd, &m.path)),
    };
    pb::Route {
        name: r.name.clone(),
        // Route-level stats (`vhost.<host>.route.<name>.upstream_rq_*`), which the bootstrap's
        // tag extractors turn into per-destination, per-rule labels (`stats.rs`).
        stat_prefix: r.name.clone(),
        r#match: Some(route_match(m)),
        action: Some(action),
        request_headers_to_add: headers_to_add(&r.request_headers),
        request_headers_to_remove: headers_to_remove(&r.request_headers),
        response_headers_to_add: headers_to_add(&r.response_headers),
        response_headers_to_remove: headers_to_remove(&r.response_headers),
        // One entry at most, so prost's hash-ordered map encodes the same way every time.
        typed_per_filter_config: r
            .fault
            .as_ref()
            .and_then(fault)
            .map(|f| (FAULT_FILTER.to_owned(), proto::any(&f)))
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

fn route_match(m: &RouteMatch) -> pb::RouteMatch {
    let path = match &m.path {
        PathMatch::Any => PathSpecifier::Prefix("/".to_owned()),
        PathMatch::Exact(p) => PathSpecifier::Path(p.clone()),
        // Whole segments, which is what `path_separated_prefix` matches; it refuses a
        // trailing '/', which changes nothing about which paths match.
        PathMatch::Prefix(p) => match p.trim_end_matches('/') {
            "" => PathSpecifier::Prefix("/".to_owned()),
            p => PathSpecifier::PathSeparatedPrefix(p.to_owned()),
        },
        PathMatch::Regex(r) => PathSpecifier::SafeRegex(regex(r)),
    };
    let method = m.method.map(|method| HeaderMatcher {
        name: ":method".to_owned(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(
            &ValueMatch::Exact(method.to_owned()),
        ))),
        ..Default::default()
    });
    pb::RouteMatch {
        path_specifier: Some(path),
        headers: m
            .headers
            .iter()
            .map(|h: &StringMatch| HeaderMatcher {
                name: h.name.clone(),
                header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(
                    &h.value,
                ))),
                ..Default::default()
            })
            .chain(method)
            .collect(),
        query_parameters: m
            .query_params
            .iter()
            .map(|q| QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(
                    string_matcher(&q.value),
                )),
            })
            .collect(),
        ..Default::default()
    }
}

/// RE2 is Envoy's default (and only) engine, so only the expression is set.
pub(crate) fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_owned(),
        engine_type: None,
    }
}

pub(crate) fn string_matcher(v: &ValueMatch) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(match v {
            ValueMatch::Exact(s) => MatchPattern::Exact(s.clone()),
            ValueMatch::Regex(r) => MatchPattern::SafeRegex(regex(r)),
        }),
        ..Default::default()
    }
}

fn route_action(f: &Forward, matched: &PathMatch, host_header: Option<&str>) -> RouteAction {
    let mut clusters = split(&f.clusters);
    let cluster_specifier = if clusters.len() == 1 {
        clusters
            .pop()
            .map(|(name, _)| route_action::ClusterSpecifier::Cluster(name.to_owned()))
    } else {
        // No total_weight: Envoy sums the weights itself.
        Some(route_action::ClusterSpecifier::WeightedClusters(
            pb::WeightedCluster {
                clusters: clusters
                    .into_iter()
                    .map(|(name, weight)| ClusterWeight {
                        name: name.to_owned(),
                        weight: Some(proto::u32_value(weight)),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        ))
    };
    let (prefix_rewrite, regex_rewrite) = match f.rewrite.as_ref().and_then(|r| r.path.as_ref()) {
        Some(p) => match path_rewrite(p, matched) {
            Some(NewPath::Prefix(p)) => (p, None),
            Some(NewPath::Regex(r)) => (String::new(), Some(r)),
            None => (String::new(), None),
        },
        None => (String::new(), None),
    };
    let host = f
        .rewrite
        .as_ref()
        .and_then(|r| r.host.as_deref())
        .or(host_header);
    RouteAction {
        cluster_specifier,
        // Envoy's default is 15 seconds; the model's `None` means no limit, which is zero.
        timeout: Some(proto::duration(f.timeout.unwrap_or_default())),
        retry_policy: f.retry.as_ref().map(retry_policy),
        prefix_rewrite,
        regex_rewrite,
        host_rewrite_specifier: host
            .map(|h| route_action::HostRewriteSpecifier::HostRewriteLiteral(h.to_owned())),
        // A share sent to an invalid backend of an HTTPRoute.
        cluster_not_found_response_code: if f.clusters.iter().any(|c| c.target == Target::Invalid) {
            route_action::ClusterNotFoundResponseCode::InternalServerError as i32
        } else {
            route_action::ClusterNotFoundResponseCode::ServiceUnavailable as i32
        },
        // A mirror of a backend that does not exist would copy requests to nowhere; leaving
        // it out does the same with less work.
        request_mirror_policies: f
            .mirrors
            .iter()
            .filter(|m| matches!(m.cluster, Target::Cluster(_)))
            .map(|m| route_action::RequestMirrorPolicy {
                cluster: cluster_name(&m.cluster).to_owned(),
                runtime_fraction: Some(RuntimeFractionalPercent {
                    default_value: Some(proto::percent(m.percent)),
                    runtime_key: String::new(),
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn retry_policy(r: &config::RetryPolicy) -> RetryPolicy {
    let mut retry_on = r.retry_on.clone();
    // Status codes only count when this condition is on.
    if !r.status_codes.is_empty() && !retry_on.contains(&"retriable-status-codes") {
        retry_on.push("retriable-status-codes");
    }
    RetryPolicy {
        retry_on: retry_on.join(","),
        num_retries: Some(proto::u32_value(r.attempts)),
        per_try_timeout: r.per_try_timeout.map(proto::duration),
        retriable_status_codes: r.status_codes.clone(),
        // Envoy refuses a zero base interval; zero means its default backoff.
        retry_back_off: r.backoff.filter(|b| !b.is_zero()).map(|b| RetryBackOff {
            base_interval: Some(proto::duration(b)),
            max_interval: None,
        }),
        ..Default::default()
    }
}

fn redirect(r: &Redirect, matched: &PathMatch) -> RedirectAction {
    let response_code = match r.status {
        301 => RedirectResponseCode::MovedPermanently,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::Found,
    };
    let path_rewrite_specifier = r.path.as_ref().and_then(|p| match p {
        PathRewrite::Full(p) => Some(redirect_action::PathRewriteSpecifier::PathRedirect(
            p.clone(),
        )),
        PathRewrite::Prefix(_) => path_rewrite(p, matched).map(|n| match n {
            NewPath::Prefix(p) => redirect_action::PathRewriteSpecifier::PrefixRewrite(p),
            NewPath::Regex(r) => redirect_action::PathRewriteSpecifier::RegexRewrite(r),
        }),
    });
    RedirectAction {
        host_redirect: r.host.clone().unwrap_or_default(),
        port_redirect: r.port.map_or(0, u32::from),
        response_code: response_code as i32,
        scheme_rewrite_specifier: r
            .scheme
            .map(|s| redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s.to_owned())),
        path_rewrite_specifier,
        ..Default::default()
    }
}

/// How a new path is written, in the two forms Envoy offers for both forwarding and redirects.
#[derive(Debug, PartialEq)]
enum NewPath {
    /// Replaces what the route's match matched.
    Prefix(String),
    Regex(RegexMatchAndSubstitute),
}

/// Envoy's `prefix_rewrite` swaps the matched prefix as a string, which leaves a doubled or a
/// missing '/' where segment semantics expect none; those cases become regex rewrites.
/// `None` means the path stays as it is.
fn path_rewrite(rewrite: &PathRewrite, matched: &PathMatch) -> Option<NewPath> {
    let full = |p: &str| {
        NewPath::Regex(RegexMatchAndSubstitute {
            pattern: Some(regex("^.*$")),
            substitution: p.replace('\\', "\\\\"),
        })
    };
    match (rewrite, matched) {
        (PathRewrite::Full(p), _) => Some(full(p)),
        // An exact match matched the whole path: its prefix is the path.
        (PathRewrite::Prefix(p), PathMatch::Exact(_)) => Some(NewPath::Prefix(p.clone())),
        // A regex has no prefix to speak of; the whole path is what it matched.
        (PathRewrite::Prefix(p), PathMatch::Regex(_)) => Some(full(p)),
        // The matched prefix is "/": `/a` under `/v2` is `/v2/a`.
        (PathRewrite::Prefix(p), PathMatch::Any) => match p.trim_end_matches('/') {
            "" => None,
            p => Some(NewPath::Prefix(format!("{p}/"))),
        },
        (PathRewrite::Prefix(p), PathMatch::Prefix(old)) => {
            let old = old.trim_end_matches('/');
            match p.trim_end_matches('/') {
                // `/api/v1` with `/api` replaced by `/` is `/v1`, not `//v1`.
                "" => Some(NewPath::Regex(RegexMatchAndSubstitute {
                    pattern: Some(regex(&format!("^{}/*", regex_escape(old)))),
                    substitution: "/".to_owned(),
                })),
                p => Some(NewPath::Prefix(p.to_owned())),
            }
        }
    }
}

/// Escapes RE2's metacharacters, so a path matches itself.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn fault(f: &Fault) -> Option<HttpFault> {
    if f.delay.is_none() && f.abort.is_none() {
        return None;
    }
    Some(HttpFault {
        delay: f.delay.map(|(d, share)| FaultDelay {
            percentage: Some(proto::percent(share)),
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(proto::duration(d))),
        }),
        abort: f.abort.map(|(status, share)| FaultAbort {
            percentage: Some(proto::percent(share)),
            error_type: Some(ErrorType::HttpStatus(u32::from(status))),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Envoy refuses any route that changes the Host header through its header lists (the whole
/// route config would be rejected). Setting it is what a host rewrite does, so a set or added
/// Host becomes one (an explicit rewrite wins); removing it is impossible, so that is dropped.
fn is_host(name: &str) -> bool {
    name.eq_ignore_ascii_case("host")
}

fn host_header(changes: &HeaderChanges) -> Option<&str> {
    changes
        .set
        .iter()
        .chain(&changes.add)
        .find(|(name, _)| is_host(name))
        .map(|(_, value)| value.as_str())
}

/// `set` replaces any value the message has; `add` appends another.
fn headers_to_add(changes: &HeaderChanges) -> Vec<HeaderValueOption> {
    let option = |(name, value): &(String, String), action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: name.clone(),
            value: value.clone(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    changes
        .set
        .iter()
        .filter(|(name, _)| !is_host(name))
        .map(|h| option(h, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .chain(
            changes
                .add
                .iter()
                .filter(|(name, _)| !is_host(name))
                .map(|h| option(h, HeaderAppendAction::AppendIfExistsOrAdd)),
        )
        .collect()
}

fn headers_to_remove(changes: &HeaderChanges) -> Vec<String> {
    changes
        .remove
        .iter()
        .filter(|name| !is_host(name))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }

    fn regex_rewrite(pattern: &str, substitution: &str) -> Option<NewPath> {
        Some(NewPath::Regex(RegexMatchAndSubstitute {
            pattern: Some(regex(pattern)),
            substitution: substitution.into(),
        }))
    }

    #[test]
    fn an_invalid_backends_share_answers_500_from_a_cluster_envoy_lacks() {
        let share = |target, weight| config::WeightedCluster { target, weight };
        let forward = |clusters| Forward {
            clusters,
            timeout: None,
            retry: None,
            rewrite: None,
            mirrors: Vec::new(),
        };
        let split = forward(vec![
            share(Target::Cluster("v1".into()), 1),
            share(Target::Invalid, 1),
        ]);
        let action = route_action(&split, &prefix("/"), None);
        let Some(route_action::ClusterSpecifier::WeightedClusters(w)) = &action.cluster_specifier
        else {
            panic!("a split: {action:?}");
        };
        let names: Vec<&str> = w.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["v1", crate::INVALID_BACKEND_CLUSTER]);
        assert_eq!(
            action.cluster_not_found_response_code,
            route_action::ClusterNotFoundResponseCode::InternalServerError as i32
        );
        let missing = route_action(
            &forward(vec![share(Target::Unresolved, 1)]),
            &prefix("/"),
            None,
        );
        assert_eq!(
            missing.cluster_not_found_response_code,
            route_action::ClusterNotFoundResponseCode::ServiceUnavailable as i32,
            "a TrafficRoute's missing backend: the empty cluster's 503"
        );
    }

    #[test]
    fn prefix_rewrites_keep_exactly_one_slash_between_segments() {
        let to = |p: &str| PathRewrite::Prefix(p.into());
        assert_eq!(
            path_rewrite(&to("/v2"), &prefix("/api")),
            Some(NewPath::Prefix("/v2".into()))
        );
        assert_eq!(
            path_rewrite(&to("/v2/"), &prefix("/api/")),
            Some(NewPath::Prefix("/v2".into()))
        );
        assert_eq!(
            path_rewrite(&to("/"), &prefix("/a.b")),
            regex_rewrite(r"^/a\.b/*", "/")
        );
        assert_eq!(
            path_rewrite(&to("/v2"), &PathMatch::Any),
            Some(NewPath::Prefix("/v2/".into()))
        );
        assert_eq!(path_rewrite(&to("/"), &PathMatch::Any), None);
        assert_eq!(
            path_rewrite(&to("/new"), &PathMatch::Exact("/old".into())),
            Some(NewPath::Prefix("/new".into()))
        );
    }

    #[test]
    fn full_rewrites_replace_the_whole_path() {
        assert_eq!(
            path_rewrite(&PathRewrite::Full("/x".into()), &prefix("/api")),
            regex_rewrite("^.*$", "/x")
        );
        assert_eq!(
            path_rewrite(
                &PathRewrite::Prefix("/x".into()),
                &PathMatch::Regex("/a.*".into())
            ),
            regex_rewrite("^.*$", "/x")
        );
    }

    #[test]
    fn regex_escape_escapes_only_metacharacters() {
        assert_eq!(regex_escape("/a.b(c)_d-e"), r"/a\.b\(c\)_d-e");
    }

    /// The regexes translation writes itself are compiled by every proxy too: they must stay
    /// within Envoy's default limit whatever prefix a route gives (RE2 matches a leading
    /// literal without compiling it).
    #[test]
    fn generated_rewrite_regexes_stay_within_envoys_default_limit() {
        let long = format!("/{}", "a.b(c)[d]{e}|f*g+h?^$\\é".repeat(40));
        for old in ["/api", "/a.b", long.as_str()] {
            let Some(NewPath::Regex(r)) =
                path_rewrite(&PathRewrite::Prefix("/".into()), &prefix(old))
            else {
                panic!("a regex rewrite for {old}");
            };
            let pattern = r.pattern.expect("a pattern").regex;
            let size = remora_re2::program_size(&pattern, remora_re2::DEFAULT_MAX_PROGRAM_SIZE);
            assert!(matches!(size, Ok(s) if s <= 10), "{pattern}: {size:?}");
        }
        let full = path_rewrite(&PathRewrite::Full("/x".into()), &prefix("/api"));
        let Some(NewPath::Regex(r)) = full else {
            panic!("a regex rewrite");
        };
        let pattern = r.pattern.expect("a pattern").regex;
        assert!(remora_re2::program_size(&pattern, remora_re2::DEFAULT_MAX_PROGRAM_SIZE).is_ok());
    }

    #[test]
    fn host_header_changes_become_a_host_rewrite() {
        let changes = HeaderChanges {
            set: vec![
                ("host".into(), "example.com".into()),
                ("x-a".into(), "1".into()),
            ],
            add: vec![("x-b".into(), "2".into())],
            remove: vec!["host".into(), "x-c".into()],
        };
        assert_eq!(host_header(&changes), Some("example.com"));
        let added: Vec<_> = headers_to_add(&changes)
            .into_iter()
            .map(|h| {
                let header = h.header.expect("header");
                (header.key, header.value, h.append_action)
            })
            .collect();
        assert_eq!(
            added,
            [
                (
                    "x-a".to_owned(),
                    "1".to_owned(),
                    HeaderAppendAction::OverwriteIfExistsOrAdd as i32
                ),
                (
                    "x-b".to_owned(),
                    "2".to_owned(),
                    HeaderAppendAction::AppendIfExistsOrAdd as i32
                ),
            ]
        );
        assert_eq!(headers_to_remove(&changes), ["x-c"]);
    }
}
