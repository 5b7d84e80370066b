//! The mutating review for Pods, with no I/O: an AdmissionReview in, the review with its JSON
//! patch out. What to add comes from a [`PodInjector`] the caller supplies, so this crate
//! knows nothing of the mesh model; it only speaks the admission protocol.

use std::fmt;

use k8s_openapi::{ByteString, api::core::v1::Pod};
use kube::core::{
    DynamicObject, Status,
    admission::{AdmissionResponse, AdmissionReview, Operation},
};
use remora_inject::JsonPatchOp;
use serde_json::Value;

/// The path the MutatingWebhookConfiguration points at.
pub const MUTATE_PODS_PATH: &str = "/mutate-pods";

/// Decides a pod's sidecar from state the caller keeps; called on the request path, so it must
/// answer from memory.
pub trait PodInjector: Send + Sync + fmt::Debug {
    /// The operations that add the sidecar to `pod`, being created in `namespace` (a pod's own
    /// `metadata.namespace` may still be empty at admission). None: the pod stays as it is.
    fn inject(&self, namespace: &str, pod: &Pod) -> Result<Vec<JsonPatchOp>, InjectFailure>;
}

/// Why a pod got no answer of operations.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InjectFailure {
    /// The pod cannot carry the sidecar as it is written; it is refused with this message,
    /// since admitting it without the sidecar would let it escape the policy.
    #[error("{0}")]
    Refused(String),
    /// The injector cannot decide now (it has not read the cluster yet). The webhook call
    /// fails, so the configuration's `failurePolicy` decides, and the pod's creator retries.
    #[error("{0}")]
    Unavailable(String),
}

/// The injector could not decide; the HTTP layer answers 503.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sidecar injection is unavailable: {0}")]
pub struct Unavailable(pub String);

/// Answers one AdmissionReview for a Pod: allowed unchanged, allowed with a JSON patch, or
/// refused. Only `CREATE` is injected; a sidecar added on update would be rejected anyway, as
/// a pod's containers cannot change.
pub fn review_pod(body: &[u8], injector: &dyn PodInjector) -> Result<Value, Unavailable> {
    let request = match crate::review::parse_request(body) {
        Ok(r) => r,
        Err(reason) => {
            tracing::warn!(%reason, "malformed pod admission review");
            return Ok(to_json(AdmissionResponse::invalid(reason).into_review()));
        }
    };
    let response = AdmissionResponse::from(&request);
    if request.operation != Operation::Create {
        return Ok(to_json(response.into_review()));
    }
    let kind = &request.kind;
    if !(kind.group.is_empty() && kind.kind == "Pod") {
        let mut response = response;
        response.warnings = Some(vec![format!(
            "remora's sidecar injection only handles Pods, not {}.{}; remove it from the \
             MutatingWebhookConfiguration's rules",
            kind.kind, kind.group
        )]);
        return Ok(to_json(response.into_review()));
    }
    let pod = match request.object.as_ref().map(serde_json::to_value) {
        Some(Ok(value)) => remora_api::decode::<Pod>(value).map_err(|e| {
            let at = if e.path.is_empty() {
                "(object)"
            } else {
                &e.path
            };
            format!("the pod cannot be read: {at}: {}", e.message)
        }),
        Some(Err(e)) => Err(format!("the pod cannot be read: {e}")),
        None => Err("the request carries no pod".to_owned()),
    };
    let pod = match pod {
        Ok(p) => p,
        Err(message) => return Ok(to_json(deny(response, &message).into_review())),
    };
    let namespace = request.namespace.as_deref().unwrap_or_default();
    match injector.inject(namespace, &pod) {
        Ok(ops) if ops.is_empty() => Ok(to_json(response.into_review())),
        Ok(ops) => Ok(with_patch(response, &ops)),
        Err(InjectFailure::Refused(message)) => Ok(to_json(deny(response, &message).into_review())),
        Err(InjectFailure::Unavailable(message)) => Err(Unavailable(message)),
    }
}

fn deny(mut response: AdmissionResponse, message: &str) -> AdmissionResponse {
    response.allowed = false;
    response.result = Status::failure(message, "Invalid").with_code(422);
    response
}

/// The review with `patch` base64-encoded, as the API server reads a Go `[]byte`. kube's own
/// `with_patch` leaves the bytes as a JSON array of numbers, so the fields are set here.
fn with_patch(response: AdmissionResponse, ops: &[JsonPatchOp]) -> Value {
    let mut review = to_json(response.into_review());
    // A list of add operations of JSON values always serializes.
    let bytes = serde_json::to_vec(ops).unwrap_or_default();
    review["response"]["patch"] = serde_json::to_value(ByteString(bytes)).unwrap_or_default();
    review["response"]["patchType"] = Value::from("JSONPatch");
    review
}

fn to_json(review: AdmissionReview<DynamicObject>) -> Value {
    // A review is plain data: strings, numbers and maps of them.
    serde_json::to_value(review).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    /// Answers with what it was given and remembers what it was asked.
    #[derive(Debug)]
    struct Fake {
        answer: Result<Vec<JsonPatchOp>, InjectFailure>,
        asked: Mutex<Vec<(String, Option<String>)>>,
    }

    impl Fake {
        fn new(answer: Result<Vec<JsonPatchOp>, InjectFailure>) -> Fake {
            Fake {
                answer,
                asked: Mutex::default(),
            }
        }
    }

    impl PodInjector for Fake {
        fn inject(&self, namespace: &str, pod: &Pod) -> Result<Vec<JsonPatchOp>, InjectFailure> {
            self.asked
                .lock()
                .expect("not poisoned")
                .push((namespace.to_owned(), pod.metadata.generate_name.clone()));
            self.answer.clone()
        }
    }

    fn request(operation: &str, kind: Value, object: Value) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": kind,
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": object
            }
        })
        .to_string()
        .into_bytes()
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-7d9f-", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}
        })
    }

    fn pod_kind() -> Value {
        json!({"group": "", "version": "v1", "kind": "Pod"})
    }

    fn add(path: &str, value: Value) -> JsonPatchOp {
        JsonPatchOp::Add {
            path: path.into(),
            value,
        }
    }

    #[test]
    fn a_skipped_pod_is_allowed_unchanged() {
        let fake = Fake::new(Ok(Vec::new()));
        let a = review_pod(&request("CREATE", pod_kind(), pod()), &fake).expect("answered");
        assert_eq!(a["response"]["uid"], "u-1");
        assert_eq!(a["response"]["allowed"], true, "{a}");
        assert!(a["response"].get("patch").is_none(), "{a}");
        assert_eq!(
            *fake.asked.lock().expect("not poisoned"),
            [("shop".to_owned(), Some("web-7d9f-".to_owned()))]
        );
    }

    #[test]
    fn an_injected_pod_gets_a_base64_json_patch_that_applies() {
        let ops = vec![
            add(
                "/spec/containers/0",
                json!({"name": "remora-proxy", "image": "envoyproxy/envoy:v1.40.0"}),
            ),
            add(
                "/metadata/annotations",
                json!({"sidecar.remora.dev/version": "v1.40.0"}),
            ),
        ];
        let fake = Fake::new(Ok(ops));
        let a = review_pod(&request("CREATE", pod_kind(), pod()), &fake).expect("answered");
        let r = &a["response"];
        assert_eq!(r["allowed"], true, "{a}");
        assert_eq!(r["patchType"], "JSONPatch");
        let bytes: ByteString =
            serde_json::from_value(r["patch"].clone()).expect("patch is a base64 string");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes.0).expect("RFC 6902");
        let mut patched = pod();
        json_patch::patch(&mut patched, &patch).expect("the patch applies to the pod");
        assert_eq!(patched["spec"]["containers"][0]["name"], "remora-proxy");
        assert_eq!(patched["spec"]["containers"][1]["name"], "web");
        assert_eq!(
            patched["metadata"]["annotations"]["sidecar.remora.dev/version"],
            "v1.40.0"
        );
    }

    #[test]
    fn a_pod_that_cannot_be_injected_is_refused_with_the_reason() {
        let why =
            "spec.containers[0].ports[0].containerPort: port 15021 belongs to the injected proxy";
        let fake = Fake::new(Err(InjectFailure::Refused(why.into())));
        let a = review_pod(&request("CREATE", pod_kind(), pod()), &fake).expect("answered");
        let r = &a["response"];
        assert_eq!(r["allowed"], false, "{a}");
        assert_eq!(r["uid"], "u-1");
        assert_eq!(r["status"]["message"], why);
        assert_eq!(r["status"]["code"], 422);
        assert!(r.get("patch").is_none());
    }

    #[test]
    fn an_injector_that_cannot_decide_fails_the_call() {
        let fake = Fake::new(Err(InjectFailure::Unavailable("not synced".into())));
        let a = review_pod(&request("CREATE", pod_kind(), pod()), &fake);
        assert_eq!(a, Err(Unavailable("not synced".into())));
    }

    #[test]
    fn malformed_reviews_and_pods_are_refused_without_asking() {
        let fake = Fake::new(Ok(vec![add("/x", json!(1))]));
        let a = review_pod(b"{\"kind\": 1}", &fake).expect("answered");
        assert_eq!(a["response"]["allowed"], false);
        assert_eq!(a["response"]["uid"], "");

        let mut bad = pod();
        bad["spec"]["containers"] = json!("web");
        let a = review_pod(&request("CREATE", pod_kind(), bad), &fake).expect("answered");
        assert_eq!(a["response"]["allowed"], false, "{a}");
        let message = a["response"]["status"]["message"].as_str().expect("text");
        assert!(message.contains("spec.containers"), "{message}");
        assert!(fake.asked.lock().expect("not poisoned").is_empty());
    }

    #[test]
    fn only_pod_creates_are_injected() {
        let fake = Fake::new(Ok(vec![add("/x", json!(1))]));
        let a = review_pod(&request("UPDATE", pod_kind(), pod()), &fake).expect("answered");
        assert_eq!(a["response"]["allowed"], true);
        assert!(a["response"].get("patch").is_none());
        let deployment = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        let a = review_pod(&request("CREATE", deployment, pod()), &fake).expect("answered");
        assert_eq!(a["response"]["allowed"], true);
        assert!(a["response"].get("patch").is_none());
        let warning = a["response"]["warnings"][0].as_str().expect("a warning");
        assert!(warning.contains("Deployment.apps"), "{warning}");
        assert!(fake.asked.lock().expect("not poisoned").is_empty());
    }
}
