//! The verdicts of `remora check`, as plain functions of what was read from the cluster, so
//! each is tested without one.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use remora_api::sidecar_policy::{SUPPORTED_PROXY_VERSIONS, check_proxy_version};
use remora_controller::endpoints::EndpointApi;
use remora_inject::{Layout, ServerVersion};
use serde::Serialize;

/// CRD validation rules (CEL) are served from this version on (beta, on by default).
pub const CEL_SINCE: (u32, u32) = (1, 25);

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// As it should be.
    Ok,
    /// Works, in a lesser way; the message says what is lost.
    Warn,
    /// Broken: the message says how to fix it.
    Fail,
}

/// One check's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// What was checked, e.g. `native-sidecars`.
    pub check: &'static str,
    /// How it came out.
    pub outcome: Outcome,
    /// What was found, and what to do about it.
    pub message: String,
}

pub fn verdict(check: &'static str, outcome: Outcome, message: impl Into<String>) -> Verdict {
    Verdict {
        check,
        outcome,
        message: message.into(),
    }
}

/// What the API server's version implies: native sidecars and CRD validation rules.
pub fn server_features(v: ServerVersion) -> [Verdict; 2] {
    let sidecars = match Layout::for_server(v) {
        Layout::Native => verdict(
            "native-sidecars",
            Outcome::Ok,
            "proxies run as native sidecars: started before the app, stopped after it",
        ),
        Layout::Classic => verdict(
            "native-sidecars",
            Outcome::Warn,
            format!(
                "Kubernetes {}.{} has no native sidecars (1.29+): the proxy is the first \
                 ordinary container, and a Job's pod does not end while it runs",
                v.major, v.minor
            ),
        ),
    };
    let cel = if (v.major, v.minor) >= CEL_SINCE {
        verdict(
            "crd-validation-rules",
            Outcome::Ok,
            "the API server checks the CRDs' CEL rules",
        )
    } else {
        verdict(
            "crd-validation-rules",
            Outcome::Warn,
            format!(
                "Kubernetes {}.{} drops the CRDs' CEL rules (1.25+): only the admission \
                 webhook refuses what they would, so keep it running",
                v.major, v.minor
            ),
        )
    };
    [sidecars, cel]
}

/// Where the controller will read endpoints from.
pub fn endpoints(api: EndpointApi) -> Verdict {
    match api {
        EndpointApi::SlicesV1 => verdict(
            "endpointslices",
            Outcome::Ok,
            "discovery.k8s.io/v1 EndpointSlices",
        ),
        EndpointApi::SlicesV1beta1 => verdict(
            "endpointslices",
            Outcome::Warn,
            "discovery.k8s.io/v1 is not served (Kubernetes < 1.21): v1beta1 EndpointSlices are read instead",
        ),
        EndpointApi::Endpoints => verdict(
            "endpointslices",
            Outcome::Warn,
            "no EndpointSlices are served: core/v1 Endpoints are read instead (large Services cost more)",
        ),
    }
}

/// An installed CRD against the one this binary was built with: every field it knows must be
/// there; fields it does not know mean a newer CRD. `None` when the CRD is not installed.
pub fn crd(
    name: &str,
    installed: Option<&JSONSchemaProps>,
    built: &JSONSchemaProps,
    pre: bool,
) -> Verdict {
    let check = "crds";
    let Some(installed) = installed else {
        return if pre {
            verdict(
                check,
                Outcome::Ok,
                format!("{name}: not installed yet; the remora-crds chart installs it"),
            )
        } else {
            verdict(
                check,
                Outcome::Fail,
                format!("{name}: not installed: helm install remora-crds charts/remora-crds"),
            )
        };
    };
    let (have, want) = (fields(installed), fields(built));
    let missing: Vec<_> = want.difference(&have).cloned().collect();
    let extra: Vec<_> = have.difference(&want).cloned().collect();
    if !missing.is_empty() {
        verdict(
            check,
            Outcome::Fail,
            format!(
                "{name}: older than this remora, it lacks {}: helm upgrade remora-crds charts/remora-crds",
                shortlist(&missing)
            ),
        )
    } else if !extra.is_empty() {
        verdict(
            check,
            Outcome::Warn,
            format!(
                "{name}: newer than this remora (it has {}): upgrade remora",
                shortlist(&extra)
            ),
        )
    } else {
        verdict(check, Outcome::Ok, format!("{name}: current"))
    }
}

/// The first few, then how many more.
fn shortlist(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(3).map(String::as_str).collect();
    match items.len() - shown.len() {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// Every field path a schema declares, e.g. `spec.http[].matches[].path`.
fn fields(schema: &JSONSchemaProps) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    collect(schema, "", &mut out);
    out
}

fn collect(schema: &JSONSchemaProps, at: &str, out: &mut BTreeSet<String>) {
    for (name, s) in schema.properties.iter().flatten() {
        let path = if at.is_empty() {
            name.clone()
        } else {
            format!("{at}.{name}")
        };
        out.insert(path.clone());
        collect(s, &path, out);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &schema.items {
        collect(items, &format!("{at}[]"), out);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties {
        collect(values, &format!("{at}{{}}"), out);
    }
}

/// The controller's pods: how many are ready.
pub fn control_plane(namespace: &str, ready: usize, total: usize) -> Verdict {
    let check = "control-plane";
    match (ready, total) {
        (_, 0) => verdict(
            check,
            Outcome::Fail,
            format!(
                "no controller pod in {namespace}: is Remora installed there? (--control-plane-namespace)"
            ),
        ),
        (0, n) => verdict(
            check,
            Outcome::Fail,
            format!("none of the {n} controller pods in {namespace} is ready"),
        ),
        (r, n) if r < n => verdict(
            check,
            Outcome::Warn,
            format!("{r} of {n} controller pods in {namespace} are ready"),
        ),
        (r, _) => verdict(
            check,
            Outcome::Ok,
            format!("{r} controller pods ready in {namespace}"),
        ),
    }
}

/// The proxy versions the policies run and ask for, against the supported window.
pub fn proxy_versions<'a>(versions: impl IntoIterator<Item = (&'a str, &'a str)>) -> Verdict {
    let check = "proxy-versions";
    let outside: BTreeSet<String> = versions
        .into_iter()
        .filter(|(_, v)| check_proxy_version(v).is_err())
        .map(|(policy, v)| format!("{policy} ({v})"))
        .collect();
    if outside.is_empty() {
        verdict(
            check,
            Outcome::Ok,
            format!(
                "every policy's proxies are in the supported window ({SUPPORTED_PROXY_VERSIONS})"
            ),
        )
    } else {
        let list: Vec<String> = outside.into_iter().collect();
        verdict(
            check,
            Outcome::Fail,
            format!(
                "outside the supported window ({SUPPORTED_PROXY_VERSIONS}): {}; set spec.proxy.version and let the rollout move them",
                shortlist(&list)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use remora_api::{TrafficRoute, crd_schema};

    use super::*;

    fn v(minor: u32) -> ServerVersion {
        ServerVersion { major: 1, minor }
    }

    #[test]
    fn old_servers_degrade_with_a_warning_that_says_what_is_lost() {
        let outcomes = |minor| server_features(v(minor)).map(|v| v.outcome);
        assert_eq!(outcomes(20), [Outcome::Warn, Outcome::Warn]);
        assert_eq!(outcomes(25), [Outcome::Warn, Outcome::Ok]);
        assert_eq!(outcomes(29), [Outcome::Ok, Outcome::Ok]);
        assert!(server_features(v(20))[1].message.contains("webhook"));
        assert_eq!(endpoints(EndpointApi::SlicesV1beta1).outcome, Outcome::Warn);
    }

    #[test]
    fn a_crd_without_a_field_this_remora_knows_is_outdated() {
        let built = crd_schema::<TrafficRoute>();
        let name = "trafficroutes.remora.dev";
        assert_eq!(crd(name, Some(&built), &built, false).outcome, Outcome::Ok);
        let mut older = built.clone();
        let spec = older
            .properties
            .as_mut()
            .and_then(|p| p.get_mut("spec"))
            .expect("spec");
        spec.properties.as_mut().expect("spec fields").remove("tcp");
        let v = crd(name, Some(&older), &built, false);
        assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
        assert!(v.message.contains("it lacks spec.tcp"), "{}", v.message);
        assert_eq!(
            crd(name, Some(&built), &older, false).outcome,
            Outcome::Warn
        );
        assert_eq!(crd(name, None, &built, true).outcome, Outcome::Ok);
        assert_eq!(crd(name, None, &built, false).outcome, Outcome::Fail);
    }

    #[test]
    fn controller_pods_and_proxy_versions() {
        assert_eq!(control_plane("remora-system", 0, 0).outcome, Outcome::Fail);
        assert_eq!(control_plane("remora-system", 1, 2).outcome, Outcome::Warn);
        assert_eq!(control_plane("remora-system", 2, 2).outcome, Outcome::Ok);
        assert_eq!(proxy_versions([("demo/p", "v1.40.0")]).outcome, Outcome::Ok);
        let old = proxy_versions([("demo/p", "v1.40.0"), ("shop/q", "v1.2.0")]);
        assert_eq!(old.outcome, Outcome::Fail);
        assert!(old.message.contains("shop/q (v1.2.0)"), "{}", old.message);
    }
}
