//! The control plane of a cluster, reached as kubectl reaches a pod: the API server forwards
//! the gRPC port of a ready controller pod, so the user needs only a kubeconfig, no address
//! inside the cluster. Each connection tonic opens is a port-forward of its own, over which
//! TLS checks the control plane's certificate against the mesh CA for its Service's name, as
//! the proxies do.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{Api, Client, api::ListParams};
use remora_ca::CA_CERT;
use remora_controller::identity::DEFAULT_CA_SECRET;
use remora_identity::{TrustBundle, tls::client_config};
use tokio::io::DuplexStream;
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{ClientConfig, pki_types::ServerName},
};
use tonic::{
    codegen::{Service, http::Uri},
    transport::{Channel, Endpoint},
};

use super::{CALL_TIMEOUT, Connection, bundle_file, causes};
use crate::controller::{DEFAULT_SERVICE, MESH_CA_SECRET_ENV, WEBHOOK_SERVICE_ENV};

/// The chart's Deployment selects its pods by these of its labels (`remora.selectorLabels`;
/// the instance label, the release's name, is left out so any release is found).
pub const CONTROLLER_SELECTOR: &str =
    "app.kubernetes.io/name=remora,app.kubernetes.io/component=controller";
/// The chart's name for the container port of xDS and the remora.v1 API.
const GRPC_PORT: &str = "grpc-xds";

/// The controller pod to forward to, and what its spec says of its certificate.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub pod: String,
    pub port: u16,
    pub service: String,
    pub ca_secret: String,
}

/// A ready controller pod among `pods` (the first by name, so runs agree; any replica
/// lists the whole fleet), with its gRPC port.
pub fn pick(pods: &[Pod], namespace: &str) -> Result<Target, String> {
    let mut ready: Vec<&Pod> = pods.iter().filter(|p| is_ready(p)).collect();
    ready.sort_by_key(|p| p.metadata.name.as_deref());
    let Some(pod) = ready.first() else {
        return Err(format!(
            "no ready controller pod in namespace {namespace} ({} found; is Remora installed \
             there? see --control-plane-namespace and --control-plane-selector)",
            pods.len()
        ));
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let containers = pod.spec.iter().flat_map(|s| &s.containers);
    let port = containers
        .clone()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(GRPC_PORT))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .ok_or_else(|| format!("pod {namespace}/{name} has no container port {GRPC_PORT}"))?;
    let env = |var: &str| {
        containers
            .clone()
            .flat_map(|c| c.env.iter().flatten())
            .find(|e| e.name == var)
            .and_then(|e| e.value.clone())
    };
    Ok(Target {
        pod: name,
        port,
        service: env(WEBHOOK_SERVICE_ENV).unwrap_or_else(|| DEFAULT_SERVICE.into()),
        ca_secret: env(MESH_CA_SECRET_ENV).unwrap_or_else(|| DEFAULT_CA_SECRET.into()),
    })
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A channel to the control plane in `c.control_plane_namespace`, through the API server
/// `client` talks to.
pub async fn channel(client: &Client, c: &Connection) -> Result<Channel, String> {
    let namespace = &c.control_plane_namespace;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = &c.control_plane_selector;
    let found = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| format!("cannot list the controller pods in {namespace} ({selector}): {e}"))?;
    let target = pick(&found.items, namespace)?;
    let bundle = match &c.ca_file {
        Some(file) => bundle_file(file)?,
        None => mesh_bundle(client, namespace, &target.ca_secret).await?,
    };
    let name = c
        .server_name
        .clone()
        .unwrap_or_else(|| format!("{}.{namespace}.svc", target.service));
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| format!("{name:?} is no name to check a certificate for"))?;
    let forward = Forward {
        pods,
        pod: target.pod.clone(),
        port: target.port,
        tls: client_config(&bundle, None).map_err(|e| e.to_string())?,
        server_name,
    };
    Endpoint::from_shared(format!("http://{name}"))
        .map_err(|e| format!("{name}: {e}"))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(forward)
        .await
        .map_err(|e| {
            format!(
                "cannot reach the control plane through a port-forward to pod {namespace}/{} \
                 port {}: {}",
                target.pod,
                target.port,
                causes(&e)
            )
        })
}

/// The mesh's trust bundle from its CA Secret, which the user's RBAC must let them read.
async fn mesh_bundle(
    client: &Client,
    namespace: &str,
    secret: &str,
) -> Result<TrustBundle, String> {
    let what = format!("the {CA_CERT} of Secret {namespace}/{secret}");
    let found = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(secret)
        .await
        .map_err(|e| format!("cannot read {what} ({e}): pass --ca-file"))?;
    let pem = found
        .data
        .as_ref()
        .and_then(|d| d.get(CA_CERT))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .ok_or_else(|| format!("{what}: missing or not PEM"))?;
    TrustBundle::from_pem(&pem).map_err(|e| format!("{what}: {e}"))
}

/// Opens a port-forward to the pod for each connection and does the TLS handshake over it.
#[derive(Clone)]
struct Forward {
    pods: Api<Pod>,
    pod: String,
    port: u16,
    tls: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

type Forwarding =
    Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<DuplexStream>>>> + Send>>;

impl Service<Uri> for Forward {
    type Response = TokioIo<TlsStream<DuplexStream>>;
    type Error = io::Error;
    type Future = Forwarding;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Forwarding {
        let f = self.clone();
        Box::pin(async move {
            let mut forwarder = f
                .pods
                .portforward(&f.pod, &[f.port])
                .await
                .map_err(io::Error::other)?;
            let stream = forwarder
                .take_stream(f.port)
                .ok_or_else(|| io::Error::other("the port-forward has no stream"))?;
            // The pod's side (e.g. nothing listening) says what failed only on the error
            // channel; the stream just closes.
            if let Some(error) = forwarder.take_error(f.port) {
                let (pod, port) = (f.pod.clone(), f.port);
                tokio::spawn(async move {
                    if let Some(message) = error.await {
                        eprintln!("remora: port-forward to pod {pod} port {port}: {message}");
                    }
                });
            }
            let tls = TlsConnector::from(f.tls)
                .connect(f.server_name, stream)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{Container, ContainerPort, EnvVar, PodCondition, PodSpec, PodStatus},
        apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
        jiff::Timestamp,
    };

    use super::*;

    fn pod(name: &str, ready: bool, env: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "controller".into(),
                    ports: Some(vec![
                        ContainerPort {
                            name: Some("http-admin".into()),
                            container_port: 9090,
                            ..Default::default()
                        },
                        ContainerPort {
                            name: Some(GRPC_PORT.into()),
                            container_port: 18000,
                            ..Default::default()
                        },
                    ]),
                    env: Some(
                        env.iter()
                            .map(|(k, v)| EnvVar {
                                name: (*k).into(),
                                value: Some((*v).into()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_first_ready_controller_is_picked_with_its_grpc_port() {
        let mut leaving = pod("remora-a", true, &[]);
        leaving.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let pods = [
            pod("remora-c", true, &[]),
            pod("remora-0", false, &[]),
            leaving,
            pod("remora-b", true, &[]),
        ];
        assert_eq!(
            pick(&pods, "remora-system"),
            Ok(Target {
                pod: "remora-b".into(),
                port: 18000,
                service: "remora".into(),
                ca_secret: "remora-mesh-ca".into(),
            })
        );
    }

    #[test]
    fn the_certificates_names_come_from_the_controllers_environment() {
        let pods = [pod(
            "mesh-remora-0",
            true,
            &[
                (WEBHOOK_SERVICE_ENV, "mesh-remora"),
                (MESH_CA_SECRET_ENV, "mesh-remora-mesh-ca"),
            ],
        )];
        let target = pick(&pods, "mesh").expect("a target");
        assert_eq!(target.service, "mesh-remora");
        assert_eq!(target.ca_secret, "mesh-remora-mesh-ca");
    }

    #[test]
    fn no_ready_controller_is_an_error_that_says_where_it_looked() {
        let err = pick(&[pod("remora-0", false, &[])], "remora-system").expect_err("none ready");
        assert!(
            err.contains("no ready controller pod in namespace remora-system (1 found"),
            "{err}"
        );
        let mut portless = pod("remora-0", true, &[]);
        if let Some(spec) = portless.spec.as_mut() {
            spec.containers[0].ports = None;
        }
        let err = pick(&[portless], "remora-system").expect_err("no port");
        assert!(err.contains("no container port grpc-xds"), "{err}");
    }
}
