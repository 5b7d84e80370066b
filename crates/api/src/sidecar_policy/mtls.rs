//! Mutual TLS between sidecars: what the selected pods' proxies accept and originate.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Mutual TLS between sidecars: proxies prove to each other which service account they run
/// as, and encrypt what they exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mtls {
    /// What the selected pods accept, and whether they use mutual TLS at all:
    /// `Permissive` (the default) accepts mutual TLS from other sidecars and plaintext from
    /// pods without one, so workloads can join the mesh one at a time. `Strict` accepts only
    /// mutual TLS: a pod without a sidecar, or one whose sidecar has mutual TLS `Disabled`,
    /// has its connections to the selected pods closed. `Disabled` neither accepts nor
    /// originates it: other sidecars send these pods plaintext, and these pods send plaintext
    /// to every destination. Under `Permissive` and `Strict` the proxies call every sidecar
    /// that accepts it over mutual TLS, checking that the peer runs as a service account of
    /// the Service called; the application receives a mutual TLS caller's identity in the
    /// `x-forwarded-client-cert` request header (`URI=spiffe://...`; HTTP ports only). Ports
    /// excluded from interception (`proxy.interception`) bypass the proxy and so take
    /// plaintext whatever the mode.
    #[serde(default, skip_serializing_if = "MtlsMode::is_permissive")]
    pub mode: MtlsMode,
}

impl Mtls {
    /// Whether this is the default, which manifests leave out.
    pub fn is_default(&self) -> bool {
        *self == Mtls::default()
    }
}

/// What a proxy accepts inbound, and whether it originates mutual TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::plain_enum)]
pub enum MtlsMode {
    /// Only mutual TLS in; plaintext connections are closed.
    Strict,
    /// Mutual TLS and plaintext in, for a mesh that pods join one at a time.
    #[default]
    Permissive,
    /// Plaintext only, in and out.
    Disabled,
}

impl MtlsMode {
    /// Whether this is the default, which manifests leave out.
    pub fn is_permissive(&self) -> bool {
        *self == MtlsMode::Permissive
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{SidecarPolicy, SidecarPolicySpec, decode};

    fn spec(extra: serde_json::Value) -> serde_json::Value {
        let mut spec = json!({"proxy": {"image": "envoyproxy/envoy", "version": "v1.40.0"}});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        json!({
            "apiVersion": "remora.dev/v1alpha1",
            "kind": "SidecarPolicy",
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": spec,
        })
    }

    #[test]
    fn a_policy_without_mtls_is_permissive_and_writes_no_mtls_back() {
        let policy: SidecarPolicy = decode(spec(json!({}))).expect("decodes");
        assert_eq!(policy.spec.mtls.mode, MtlsMode::Permissive);
        let written = serde_json::to_value(&policy.spec).expect("serializes");
        assert_eq!(written.get("mtls"), None, "{written}");
        let explicit: SidecarPolicy =
            decode(spec(json!({"mtls": {"mode": "Permissive"}}))).expect("decodes");
        assert_eq!(
            explicit.spec, policy.spec,
            "the default said aloud is the same"
        );
    }

    #[test]
    fn each_mode_reads_back_what_it_writes() {
        for mode in [MtlsMode::Strict, MtlsMode::Disabled] {
            let policy: SidecarPolicy =
                decode(spec(json!({"mtls": {"mode": format!("{mode:?}")}}))).expect("decodes");
            assert_eq!(policy.spec.mtls.mode, mode);
            let written = serde_json::to_value(&policy.spec).expect("serializes");
            assert_eq!(written["mtls"], json!({"mode": format!("{mode:?}")}));
            let back: SidecarPolicySpec = serde_json::from_value(written).expect("reads back");
            assert_eq!(back, policy.spec);
        }
    }

    #[test]
    fn an_unknown_mode_is_refused_naming_the_field() {
        let err = decode::<SidecarPolicy>(spec(json!({"mtls": {"mode": "Mutual"}})))
            .expect_err("no such mode");
        let text = err.to_string();
        assert!(text.contains("spec.mtls.mode"), "{text}");
    }
}
