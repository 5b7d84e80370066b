//! What converting `HTTPRoute`s and `GRPCRoute`s to the internal form shares: parents,
//! backends, filters, and validation that reports at the user's paths.

use super::{BackendReference, ParentReference, PathMap, RouteFilter, is_service_backend};
use crate::{
    FieldError, TrafficRouteSpec, Validate, ValidationErrors, ValidationSettings,
    traffic_route::{BackendRef, HttpRule, Mirror, MirrorBackend, ParentRef},
};

/// A route in its internal form, with the map from its paths to the user's.
#[derive(Clone, Debug, PartialEq)]
pub struct Converted {
    /// The route as the model resolves it.
    pub spec: TrafficRouteSpec,
    /// Where each part of it came from.
    pub paths: PathMap,
}

/// A route's rules in their precedence order, each with its index in the user's route.
pub(super) type Ordered<'r, R> = Vec<(usize, &'r R)>;

/// The user's rule (at the first path) as the internal rule (at the second).
pub(super) type RuleOf<R> = fn(&mut Conversion, (&str, &str), &R, &[ParentRef]) -> HttpRule;

/// A route of either kind in its internal form, validated, every problem at the user's path.
pub(super) fn convert<R>(
    parents: &[ParentReference],
    rules: Ordered<'_, R>,
    rule_of: RuleOf<R>,
    settings: &ValidationSettings,
) -> Result<Converted, ValidationErrors> {
    let mut c = Conversion::default();
    let parent_refs = c.parents(parents);
    let mut http = Vec::new();
    for (i, rule) in rules {
        let internal = format!("spec.http[{}]", http.len());
        let user = format!("spec.rules[{i}]");
        c.paths.add(internal.clone(), user.clone());
        http.push(rule_of(&mut c, (&user, &internal), rule, &parent_refs));
    }
    let spec = TrafficRouteSpec {
        parent_refs,
        http,
        tcp: Vec::new(),
    };
    c.finish(spec, settings)
}

/// A conversion in progress: the paths mapped so far and what cannot be converted.
#[derive(Default)]
pub(super) struct Conversion {
    pub(super) paths: PathMap,
    errors: Vec<FieldError>,
}

impl Conversion {
    pub(super) fn error(&mut self, path: String, message: impl Into<String>) {
        self.errors.push(FieldError {
            path,
            message: message.into(),
            ..FieldError::default()
        });
    }

    /// Validates the converted spec and reports every problem at the user's path.
    fn finish(
        self,
        spec: TrafficRouteSpec,
        settings: &ValidationSettings,
    ) -> Result<Converted, ValidationErrors> {
        let mut errors = self.errors;
        if let Err(e) = spec.validate_with(settings) {
            errors.extend(e.0.into_iter().map(|f| FieldError {
                path: self.paths.user_path(&f.path),
                ..f
            }));
        }
        if errors.is_empty() {
            Ok(Converted {
                spec,
                paths: self.paths,
            })
        } else {
            Err(ValidationErrors(errors))
        }
    }

    /// The Service parents; the others (Gateways) are other controllers'.
    fn parents(&mut self, refs: &[ParentReference]) -> Vec<ParentRef> {
        let mut out = Vec::new();
        for (i, p) in refs.iter().enumerate() {
            if !p.is_service() {
                continue;
            }
            let path = format!("spec.parentRefs[{i}]");
            if p.section_name.is_some() {
                self.error(
                    format!("{path}.sectionName"),
                    "Remora binds to a Service port by number: set port instead of sectionName",
                );
            }
            self.paths
                .add(format!("spec.parentRefs[{}]", out.len()), path);
            out.push(ParentRef {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                port: p.port,
            });
        }
        out
    }

    /// Puts the backends of the rule at `user` into `out`. In the mesh a rule that names
    /// none sends to the Service it is for, unless it redirects.
    pub(super) fn backends(
        &mut self,
        user: &str,
        refs: &[BackendReference],
        parents: &[ParentRef],
        out: &mut HttpRule,
    ) {
        for (k, b) in refs.iter().enumerate() {
            let path = format!("{user}.backendRefs[{k}]");
            if !b.filters.is_empty() {
                self.error(
                    format!("{path}.filters"),
                    "Remora does not implement filters on one backend: move them to the rule",
                );
            }
            if !is_service_backend(b.group.as_deref(), b.kind.as_deref()) {
                self.error(
                    format!("{path}.kind"),
                    "Remora sends to Services only: set kind Service (group \"\")",
                );
                continue;
            }
            out.backend_refs.push(BackendRef {
                name: b.name.clone(),
                namespace: b.namespace.clone(),
                port: b.port,
                weight: b.weight.unwrap_or(1),
                subset: Default::default(),
            });
        }
        if !refs.is_empty() || out.redirect.is_some() {
            return;
        }
        match parents {
            [parent] => out.backend_refs.push(BackendRef {
                name: parent.name.clone(),
                namespace: parent.namespace.clone(),
                port: None,
                weight: 1,
                subset: Default::default(),
            }),
            _ => self.error(
                format!("{user}.backendRefs"),
                "a rule without backendRefs sends to its parent Service; with several \
                 parents, name the backends",
            ),
        }
    }

    /// Puts one filter's config into the internal rule at `internal`, mapping its path.
    /// `route` names the user's kind, which takes the filter types in `supported`.
    pub(super) fn filter(
        &mut self,
        out: &mut HttpRule,
        (path, internal): (&str, &str),
        f: &RouteFilter,
        (route, supported): (&str, &[&str]),
    ) {
        if !supported.contains(&f.kind.as_str()) {
            self.error(
                format!("{path}.type"),
                format!(
                    "Remora does not implement the {} filter on a {route}: remove it",
                    f.kind
                ),
            );
            return;
        }
        let put = |this: &mut Conversion, field: &str, config: &str, set: bool, ok: bool| {
            if !ok {
                this.error(
                    format!("{path}.{config}"),
                    format!("a {} filter needs its {config} settings", f.kind),
                );
            } else if set {
                this.error(
                    format!("{path}.type"),
                    format!("a rule takes one {} filter: merge them", f.kind),
                );
            }
            this.paths
                .add(format!("{internal}.{field}"), format!("{path}.{config}"));
            ok
        };
        match f.kind.as_str() {
            "RequestHeaderModifier" => {
                let m = &f.request_header_modifier;
                let set = out.request_headers.is_some();
                if put(
                    self,
                    "requestHeaders",
                    "requestHeaderModifier",
                    set,
                    m.is_some(),
                ) {
                    out.request_headers = m.clone();
                }
            }
            "ResponseHeaderModifier" => {
                let m = &f.response_header_modifier;
                let set = out.response_headers.is_some();
                if put(
                    self,
                    "responseHeaders",
                    "responseHeaderModifier",
                    set,
                    m.is_some(),
                ) {
                    out.response_headers = m.clone();
                }
            }
            "URLRewrite" => {
                let set = out.rewrite.is_some();
                if put(self, "rewrite", "urlRewrite", set, f.url_rewrite.is_some()) {
                    out.rewrite = f.url_rewrite.clone();
                }
            }
            "RequestRedirect" => {
                let r = &f.request_redirect;
                if put(
                    self,
                    "redirect",
                    "requestRedirect",
                    out.redirect.is_some(),
                    r.is_some(),
                ) {
                    out.redirect = r.clone();
                }
            }
            "RequestMirror" => {
                let m = &f.request_mirror;
                if put(
                    self,
                    "mirror",
                    "requestMirror",
                    out.mirror.is_some(),
                    m.is_some(),
                ) && let Some(m) = m
                {
                    out.mirror = Some(self.mirror(path, m));
                }
            }
            other => unreachable!("{other} is not among the filters Remora implements"),
        }
    }

    fn mirror(&mut self, path: &str, m: &super::RequestMirror) -> Mirror {
        let b = &m.backend_ref;
        if !is_service_backend(b.group.as_deref(), b.kind.as_deref()) {
            self.error(
                format!("{path}.requestMirror.backendRef.kind"),
                "Remora mirrors to Services only: set kind Service (group \"\")",
            );
        }
        Mirror {
            backend_ref: MirrorBackend {
                name: b.name.clone(),
                namespace: b.namespace.clone(),
                port: b.port,
            },
            percent: m.percent.unwrap_or(100),
        }
    }
}
