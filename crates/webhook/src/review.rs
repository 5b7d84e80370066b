//! The admission decision, with no I/O: an `admission.k8s.io/v1` AdmissionReview in, the
//! review to answer with out. The checks are `remora_api`'s, the same the reconcilers run, so
//! an object refused here would be reported `Accepted=False` had it got in.

use kube::core::{
    DynamicObject, Status,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
    response::{StatusCause, StatusDetails},
};
use remora_api::{
    AccessPolicy, FieldError, GROUP, SidecarPolicy, TrafficRoute, Validate, ValidationSettings,
    decode,
};
use serde::de::DeserializeOwned;

/// Answers one AdmissionReview request body under the default settings.
pub fn review(body: &[u8]) -> AdmissionReview<DynamicObject> {
    review_with(body, &ValidationSettings::default())
}

/// Answers one AdmissionReview request body, validating under `settings`. A body that is not
/// a review gets a denial with no uid, which the API server reports as a webhook failure (and
/// `failurePolicy` decides).
pub fn review_with(body: &[u8], settings: &ValidationSettings) -> AdmissionReview<DynamicObject> {
    match parse_request(body) {
        Ok(request) => decide(&request, settings).into_review(),
        Err(reason) => {
            tracing::warn!(%reason, "malformed admission review");
            AdmissionResponse::invalid(reason).into_review()
        }
    }
}

/// The answer to a review whose checks did not finish by `deadline`: the object is refused,
/// so that it never gets in unchecked.
pub(crate) fn too_slow(
    body: &[u8],
    deadline: std::time::Duration,
) -> AdmissionReview<DynamicObject> {
    let message = format!(
        "the object's checks did not finish within {deadline:?}, so it is refused; a \
         pathological pattern or a very large object is the likely cause"
    );
    match parse_request(body) {
        Ok(request) => {
            deny(AdmissionResponse::from(&request), message, &[], &request).into_review()
        }
        Err(reason) => AdmissionResponse::invalid(reason).into_review(),
    }
}

/// The request of an AdmissionReview body, or why there is none (for a denial).
pub(crate) fn parse_request(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) {
        Ok(review) => review
            .try_into()
            .map_err(|_| "the AdmissionReview has no request".to_owned()),
        Err(e) => Err(format!("not an admission.k8s.io/v1 AdmissionReview: {e}")),
    }
}

/// Allows or denies one request.
fn decide(
    request: &AdmissionRequest<DynamicObject>,
    settings: &ValidationSettings,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    // Deleting an object can never make the mesh invalid, and refusing a delete would keep
    // a broken object around.
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return response;
    }
    let kind = &request.kind;
    let Some(object) = &request.object else {
        return deny(
            response,
            "the request carries no object to check".into(),
            &[],
            request,
        );
    };
    let value = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => {
            return deny(
                response,
                format!("the object cannot be read: {e}"),
                &[],
                request,
            );
        }
    };
    let Findings { problems, warnings } = match (kind.group.as_str(), kind.kind.as_str()) {
        (GROUP, "TrafficRoute") => check::<TrafficRoute>(value, settings),
        (GROUP, "SidecarPolicy") => check::<SidecarPolicy>(value, settings),
        (GROUP, "AccessPolicy") => check::<AccessPolicy>(value, settings),
        _ => {
            // The webhook configuration's rules sent something this webhook has no opinion
            // on; refusing it would block that kind cluster-wide.
            tracing::warn!(group = %kind.group, kind = %kind.kind, "admission review for a kind this webhook does not check");
            let mut response = response;
            response.warnings = Some(vec![format!(
                "remora's webhook does not check {}.{}; remove it from the ValidatingWebhookConfiguration's rules",
                kind.kind, kind.group
            )]);
            return response;
        }
    };
    let mut response = response;
    if !warnings.is_empty() {
        response.warnings = Some(warnings.iter().map(ToString::to_string).collect());
    }
    if problems.is_empty() {
        return response;
    }
    let name = object
        .metadata
        .name
        .as_deref()
        .or(object.metadata.generate_name.as_deref())
        .unwrap_or(&request.name);
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let mut message = format!(
        "{} {namespace}/{name} is invalid ({} problem{}):",
        kind.kind,
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in &problems {
        message.push_str(&format!("\n  {p}"));
    }
    tracing::info!(kind = %kind.kind, %namespace, %name, problems = problems.len(), "denied");
    deny(response, message, &problems, request)
}

/// What checking an object found: problems refuse it, warnings only inform.
struct Findings {
    problems: Vec<FieldError>,
    warnings: Vec<FieldError>,
}

/// Every problem with the object (the field that does not fit its type, or everything
/// `validate()` finds) and its warnings.
fn check<T: DeserializeOwned + Validate>(
    value: serde_json::Value,
    settings: &ValidationSettings,
) -> Findings {
    match decode::<T>(value) {
        Ok(object) => Findings {
            problems: object
                .validate_with(settings)
                .err()
                .map(|e| e.0)
                .unwrap_or_default(),
            warnings: object.warnings(),
        },
        Err(e) => Findings {
            problems: vec![undecodable(e)],
            warnings: Vec::new(),
        },
    }
}

/// The field that does not fit its type, with how to find the type it takes.
fn undecodable(e: FieldError) -> FieldError {
    FieldError {
        path: if e.path.is_empty() {
            "(object)".into()
        } else {
            e.path
        },
        message: format!(
            "{}; give the field the type `kubectl explain` shows for it",
            e.message
        ),
        kind: e.kind,
    }
}

/// A denial as the API server reports it: 422 Invalid, one cause per field.
fn deny(
    mut response: AdmissionResponse,
    message: String,
    fields: &[FieldError],
    request: &AdmissionRequest<DynamicObject>,
) -> AdmissionResponse {
    let causes = fields
        .iter()
        .map(|f| StatusCause {
            reason: "FieldValueInvalid".into(),
            message: f.message.clone(),
            field: f.path.clone(),
        })
        .collect();
    response.allowed = false;
    response.result = Status::failure(&message, "Invalid")
        .with_code(422)
        .with_details(StatusDetails {
            name: request.name.clone(),
            group: request.kind.group.clone(),
            kind: request.kind.kind.clone(),
            uid: String::new(),
            causes,
            retry_after_seconds: 0,
        });
    response
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::review;

    fn request(operation: &str, kind: &str, object: Value) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "remora.dev", "version": "v1alpha1", "kind": kind},
                "resource": {"group": "remora.dev", "version": "v1alpha1", "resource": "x"},
                "name": "r",
                "namespace": "demo",
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object,
                "oldObject": null,
                "dryRun": false
            }
        })
        .to_string()
        .into_bytes()
    }

    fn route(spec: Value) -> Value {
        json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
            "metadata": {"name": "r", "namespace": "demo"},
            "spec": spec
        })
    }

    fn answer(body: &[u8]) -> Value {
        serde_json::to_value(review(body)).expect("a review serializes")
    }

    fn valid_spec() -> Value {
        json!({
            "parentRefs": [{"name": "reviews", "port": 9080}],
            "http": [{"name": "split", "backendRefs": [{"name": "reviews", "weight": 100}]}]
        })
    }

    #[test]
    fn a_valid_route_is_allowed_with_the_uid_echoed() {
        let a = answer(&request("CREATE", "TrafficRoute", route(valid_spec())));
        assert_eq!(a["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(a["kind"], "AdmissionReview");
        assert_eq!(a["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(a["response"]["allowed"], true, "{a}");
    }

    #[test]
    fn an_access_policy_is_checked_by_the_same_validation() {
        let policy = |rules: Value| {
            json!({
                "apiVersion": "remora.dev/v1alpha1", "kind": "AccessPolicy",
                "metadata": {"name": "r", "namespace": "demo"},
                "spec": {"rules": rules}
            })
        };
        let good = json!([{"name": "orders", "from": [{"serviceAccounts": ["orders"]}]}]);
        let a = answer(&request("CREATE", "AccessPolicy", policy(good)));
        assert_eq!(a["response"]["allowed"], true, "{a}");
        let bad = json!([{"name": "orders", "from": [{"identities": ["spiffe://x/orders"]}]}]);
        let a = answer(&request("CREATE", "AccessPolicy", policy(bad)));
        assert_eq!(a["response"]["allowed"], false, "{a}");
        let message = a["response"]["status"]["message"]
            .as_str()
            .expect("a message");
        assert!(
            message.contains("spec.rules[0].from[0].identities[0]"),
            "{message}"
        );
    }

    #[test]
    fn every_problem_is_listed_with_its_field_path() {
        let spec = json!({
            "parentRefs": [{"name": "reviews"}],
            "http": [
                {"name": "a", "matches": [{"path": {"type": "RegularExpression", "value": "(["}}],
                 "backendRefs": [{"name": "reviews"}]},
                {"name": "a", "backendRefs": [{"name": "reviews"}]}
            ]
        });
        let a = answer(&request("UPDATE", "TrafficRoute", route(spec)));
        let r = &a["response"];
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["code"], 422);
        let message = r["status"]["message"].as_str().expect("a message");
        assert!(
            message.starts_with("TrafficRoute demo/r is invalid (2 problems):"),
            "{message}"
        );
        assert!(
            message.contains("spec.http[0].matches[0].path.value: \"([\" is not a valid RE2"),
            "{message}"
        );
        assert!(
            message.contains("spec.http[1].name: rule name \"a\" is used twice"),
            "{message}"
        );
        let fields: Vec<&str> = r["status"]["details"]["causes"]
            .as_array()
            .expect("causes")
            .iter()
            .map(|c| c["field"].as_str().expect("a field"))
            .collect();
        assert_eq!(
            fields,
            ["spec.http[0].matches[0].path.value", "spec.http[1].name"]
        );
    }

    #[test]
    fn an_object_of_the_wrong_shape_is_denied_with_the_field() {
        let mut spec = valid_spec();
        spec["http"][0]["backendRefs"][0]["weight"] = json!("ninety");
        let a = answer(&request("CREATE", "TrafficRoute", route(spec)));
        let message = a["response"]["status"]["message"]
            .as_str()
            .expect("a message");
        assert_eq!(a["response"]["allowed"], false);
        assert!(
            message.contains("spec.http[0].backendRefs[0].weight: invalid type"),
            "{message}"
        );
    }

    #[test]
    fn sidecar_policies_are_checked_too() {
        let policy = json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
            "metadata": {"name": "p", "namespace": "demo"},
            "spec": {
                "selector": {"matchLabels": {"app": "not a value!"}},
                "proxy": {"image": "envoyproxy/envoy", "version": "v1.40.0"}
            }
        });
        let a = answer(&request("CREATE", "SidecarPolicy", policy));
        let message = a["response"]["status"]["message"]
            .as_str()
            .expect("a message");
        assert_eq!(a["response"]["allowed"], false, "{a}");
        assert!(
            message.contains("spec.selector.matchLabels.app"),
            "{message}"
        );
    }

    #[test]
    fn an_envoy_tag_without_its_v_is_allowed_with_a_warning_naming_the_tag_to_write() {
        let policy = |version: &str| {
            json!({
                "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
                "metadata": {"name": "p", "namespace": "demo"},
                "spec": {"proxy": {"image": "envoyproxy/envoy", "version": version}}
            })
        };
        let a = answer(&request("CREATE", "SidecarPolicy", policy("1.40.0")));
        assert_eq!(a["response"]["allowed"], true, "{a}");
        let warning = a["response"]["warnings"][0].as_str().expect("a warning");
        assert!(
            warning.starts_with("spec.proxy.version: ") && warning.contains("write v1.40.0"),
            "{warning}"
        );

        let a = answer(&request("CREATE", "SidecarPolicy", policy("v1.40.0")));
        assert_eq!(a["response"]["allowed"], true, "{a}");
        assert!(a["response"].get("warnings").is_none(), "{a}");
    }

    #[test]
    fn deletes_are_always_allowed() {
        let spec = json!({"parentRefs": []});
        let a = answer(&request("DELETE", "TrafficRoute", route(spec)));
        assert_eq!(a["response"]["allowed"], true);
    }

    #[test]
    fn other_kinds_are_allowed_with_a_warning() {
        let a = answer(&request(
            "CREATE",
            "Gateway",
            json!({"metadata": {"name": "g"}}),
        ));
        assert_eq!(a["response"]["allowed"], true);
        assert!(
            a["response"]["warnings"][0]
                .as_str()
                .expect("a warning")
                .contains("Gateway.remora.dev")
        );
    }

    #[test]
    fn a_body_that_is_no_review_is_refused() {
        let a = answer(b"{\"kind\": 1}");
        assert_eq!(a["response"]["allowed"], false);
        assert_eq!(a["response"]["uid"], "");
    }
}
