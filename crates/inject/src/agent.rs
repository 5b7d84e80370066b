//! The identity agent the injector adds when the mesh has workload identities: `remora
//! agent` from the control plane's image, beside the proxy. It makes the pod's key (which
//! never leaves the pod), proves the pod with a projected ServiceAccount token to get its
//! first certificate, renews with that certificate, and serves both to the proxy over SDS on
//! a Unix socket in a memory-backed `emptyDir` the two share.

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, ProjectedVolumeSource, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use remora_api::spiffe::TOKEN_AUDIENCE;
use remora_envoy::sds::SDS_DIR;

use crate::{
    Injection,
    bootstrap::{MeshIdentity, env},
    container::security_context,
};

/// The name of the agent's container.
pub const AGENT_CONTAINER: &str = "remora-agent";
/// The volume holding the agent's SDS socket, shared with the proxy.
pub const SDS_VOLUME: &str = "remora-sds";
/// The volume holding the projected token the agent proves its pod with.
pub const TOKEN_VOLUME: &str = "remora-token";
/// Where the agent finds that token.
pub const TOKEN_DIR: &str = "/var/run/secrets/remora/tokens";
const TOKEN_FILE: &str = "token";
/// The agent's variable holding the trust bundle (PEM) it checks the control plane with.
const BUNDLE_VAR: &str = "REMORA_CA_BUNDLE";
/// An hour, the kubelet refreshing it at 80%: only the first certificate, and a renewal
/// that finds its certificate expired, need it.
const TOKEN_SECONDS: i64 = 3600;

/// The agent's container.
pub(crate) fn agent_container(injection: &Injection, identity: &MeshIdentity) -> Container {
    let cp = injection.control_plane;
    let args = vec![
        "agent".to_string(),
        "--control-plane".into(),
        format!("{}:{}", cp.xds_host, cp.xds_port),
        "--server-name".into(),
        cp.xds_host.clone(),
        "--trust-domain".into(),
        identity.trust_domain.clone(),
        "--token-file".into(),
        format!("{TOKEN_DIR}/{TOKEN_FILE}"),
    ];
    let mut vars = env();
    vars.push(EnvVar {
        name: BUNDLE_VAR.into(),
        value: Some(identity.trust_bundle.clone()),
        ..EnvVar::default()
    });
    Container {
        name: AGENT_CONTAINER.into(),
        image: Some(cp.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(vars),
        volume_mounts: Some(vec![
            sds_mount(),
            VolumeMount {
                name: TOKEN_VOLUME.into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        // The proxy's user: its connections to the control plane are not captured, and the
        // proxy may use its socket. No capability; it writes nothing but the socket.
        security_context: Some(security_context()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// Where the proxy reaches the agent's socket.
pub(crate) fn sds_mount() -> VolumeMount {
    VolumeMount {
        name: SDS_VOLUME.into(),
        mount_path: SDS_DIR.into(),
        ..VolumeMount::default()
    }
}

/// The volumes the agent and the proxy share: the socket's folder, in memory, and the token.
pub(crate) fn volumes() -> Vec<Volume> {
    let sds = Volume {
        name: SDS_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    };
    let token = Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(TOKEN_AUDIENCE.into()),
                    expiration_seconds: Some(TOKEN_SECONDS),
                    path: TOKEN_FILE.into(),
                    ..ServiceAccountTokenProjection::default()
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    };
    vec![sds, token]
}
