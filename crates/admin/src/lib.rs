//! `remora.v1.Proxies`: what operators and `remora proxy-status` ask the control plane. It
//! reads the xDS server's status registry and a [`ConfigSource`]; it knows nothing of
//! Kubernetes.
#![forbid(unsafe_code)]

use std::sync::Arc;

use remora_xds::{
    ProxyId, StatusRegistry,
    status::{Mode, SyncState},
};
use tonic::{Request, Response, Status};

/// The generated messages, client and server.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("remora.v1");
}

use pb::proxies_server::{Proxies, ProxiesServer};

/// Where a proxy's computed config comes from.
pub trait ConfigSource: Send + Sync + 'static {
    /// The proxy's config as JSON, or `None` when the mesh has no such proxy.
    fn config_json(&self, proxy: &ProxyId) -> Option<String>;
}

pub struct ProxiesService {
    status: Arc<StatusRegistry>,
    configs: Arc<dyn ConfigSource>,
}

impl ProxiesService {
    pub fn new(status: Arc<StatusRegistry>, configs: Arc<dyn ConfigSource>) -> Self {
        ProxiesService { status, configs }
    }

    pub fn into_service(self) -> ProxiesServer<Self> {
        ProxiesServer::new(self)
    }
}

fn sync_state(s: SyncState) -> pb::SyncState {
    match s {
        SyncState::Synced => pb::SyncState::Synced,
        SyncState::Stale => pb::SyncState::Stale,
        SyncState::Nacked => pb::SyncState::Nacked,
    }
}

#[tonic::async_trait]
impl Proxies for ProxiesService {
    async fn list(
        &self,
        request: Request<pb::ListProxiesRequest>,
    ) -> Result<Response<pb::ListProxiesResponse>, Status> {
        let namespace = request.into_inner().namespace;
        let proxies = self
            .status
            .all()
            .into_iter()
            .filter(|p| namespace.is_empty() || p.proxy.namespace == namespace)
            .map(|p| pb::Proxy {
                namespace: p.proxy.namespace.clone(),
                name: p.proxy.name.clone(),
                mode: match p.mode {
                    Mode::StateOfTheWorld => "sotw",
                    Mode::Incremental => "delta",
                }
                .into(),
                connected_at: p
                    .connected_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                types: p
                    .types
                    .iter()
                    .map(|(type_url, t)| pb::TypeSync {
                        type_url: (*type_url).into(),
                        state: sync_state(t.state()).into(),
                        sent_version: t.sent.clone().unwrap_or_default(),
                        acked_version: t.acked.clone().unwrap_or_default(),
                        nack_message: t
                            .nack
                            .as_ref()
                            .map(|n| n.message.clone())
                            .unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListProxiesResponse { proxies }))
    }

    async fn get_config(
        &self,
        request: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::GetConfigResponse>, Status> {
        let r = request.into_inner();
        let proxy = ProxyId::new(r.namespace, r.name);
        let json = self
            .configs
            .config_json(&proxy)
            .ok_or_else(|| Status::not_found(format!("the mesh has no proxy {proxy}")))?;
        Ok(Response::new(pb::GetConfigResponse { json }))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use remora_xds::status::{Nack, TypeStatus};
    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;
    use pb::proxies_client::ProxiesClient;

    struct OneProxy;

    impl ConfigSource for OneProxy {
        fn config_json(&self, proxy: &ProxyId) -> Option<String> {
            (proxy.name == "web-0").then(|| r#"[{"kind":"Cluster"}]"#.to_owned())
        }
    }

    #[tokio::test]
    async fn lists_sync_states_and_serves_configs_over_grpc() {
        let status = StatusRegistry::new();
        let web = ProxyId::new("demo", "web-0");
        let stream = status.connected(&web, Mode::Incremental);
        let v = |s: &str| Some(s.to_owned());
        status.update(
            &web,
            stream,
            [
                (
                    "cds",
                    TypeStatus {
                        sent: v("2"),
                        acked: v("2"),
                        ..Default::default()
                    },
                ),
                (
                    "rds",
                    TypeStatus {
                        sent: v("3"),
                        acked: v("2"),
                        nack: Some(Nack {
                            version: "3".into(),
                            message: "bad regex".into(),
                        }),
                        resources_sent: 1,
                    },
                ),
            ],
        );
        status.connected(&ProxyId::new("other", "x"), Mode::StateOfTheWorld);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let service = ProxiesService::new(status, Arc::new(OneProxy)).into_service();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let mut client = ProxiesClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");

        let list = client
            .list(pb::ListProxiesRequest {
                namespace: "demo".into(),
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(list.proxies.len(), 1);
        let p = &list.proxies[0];
        assert_eq!((p.name.as_str(), p.mode.as_str()), ("web-0", "delta"));
        let states: Vec<_> = p
            .types
            .iter()
            .map(|t| (t.type_url.as_str(), t.state(), t.nack_message.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("cds", pb::SyncState::Synced, ""),
                ("rds", pb::SyncState::Nacked, "bad regex")
            ]
        );

        let config = client
            .get_config(pb::GetConfigRequest {
                namespace: "demo".into(),
                name: "web-0".into(),
            })
            .await
            .expect("config")
            .into_inner();
        assert!(config.json.contains("Cluster"));
        let missing = client
            .get_config(pb::GetConfigRequest {
                namespace: "demo".into(),
                name: "nope".into(),
            })
            .await
            .expect_err("unknown proxy");
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }
}
