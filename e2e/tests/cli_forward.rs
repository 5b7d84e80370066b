//! `remora proxy-status` and `proxy-config` with the kubeconfig alone, the whole way: the
//! real API server opens a port-forward to the controller's pod, whose node's kubelet is a
//! stand-in of this test (the stub cluster has none), which pipes the forwarded stream to a
//! real controller; the CLI checks the controller's TLS against the mesh CA it reads from
//! the CA Secret and sends the kubeconfig's bearer token, which the controller checks with
//! the API server.

mod support;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, api::DeleteParams};
use remora_api::spiffe::DEFAULT_TRUST_DOMAIN;
use remora_controller::identity::IdentityConfig;
use remora_model::input::IdentitySettings;
use support::{cluster, injection, pods::container::remora_bin, ports};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, rustls};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{Callback, ErrorResponse, Request, Response},
    http::HeaderValue,
};

/// The container port of the controller's gRPC API, as the chart names and numbers it.
const GRPC_PORT: u16 = 18000;
/// The channel protocol kube-rs offers and the kubelet answers a WebSocket port-forward in.
const CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";

/// A stand-in kubelet on loopback: HTTPS (the API server does not check a kubelet's
/// certificate unless told its CA), answering each port-forward by piping its one port's
/// data channel to `target`.
struct Kubelet {
    port: u16,
    task: JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Kubelet {
    async fn start(target: SocketAddr) -> Kubelet {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("its address").port();
        let acceptor = TlsAcceptor::from(tls());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        forward(tls, target).await;
                    }
                });
            }
        });
        Kubelet { port, task }
    }
}

/// A self-signed serving certificate for 127.0.0.1, HTTP/1.1 (the upgrade's).
fn tls() -> Arc<rustls::ServerConfig> {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("a cert");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("a server config");
    Arc::new(config)
}

/// Answers the WebSocket handshake in the channel protocol.
struct ChannelProtocol;

impl Callback for ChannelProtocol {
    fn on_request(self, _: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
        let protocol = HeaderValue::from_static(CHANNEL_PROTOCOL);
        response
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol);
        Ok(response)
    }
}

/// One port-forward: the WebSocket handshake in the channel protocol, each of the port's two
/// channels (data 0, error 1) announced with the port, then data both ways until either
/// side closes.
async fn forward<S>(stream: S, target: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, ChannelProtocol).await else {
        return;
    };
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let (mut to_client, mut from_client) = ws.split();
    let [lo, hi] = GRPC_PORT.to_le_bytes();
    for channel in [0u8, 1] {
        if to_client
            .send(Message::binary(vec![channel, lo, hi]))
            .await
            .is_err()
        {
            return;
        }
    }
    let (mut up_read, mut up_write) = upstream.into_split();
    let uplink = async {
        while let Some(Ok(message)) = from_client.next().await {
            let data = match message {
                Message::Binary(bytes) if bytes.first() == Some(&0) => bytes,
                Message::Close(_) => break,
                _ => continue,
            };
            if up_write.write_all(&data[1..]).await.is_err() {
                break;
            }
        }
        let _ = up_write.shutdown().await;
    };
    let downlink = async {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = up_read.read(&mut buffer).await {
            let mut frame = Vec::with_capacity(n + 1);
            frame.push(0);
            frame.extend_from_slice(&buffer[..n]);
            if to_client.send(Message::binary(frame)).await.is_err() {
                break;
            }
        }
        let _ = to_client.close().await;
    };
    tokio::join!(uplink, downlink);
}

// The test waits on the CLI while the stand-in kubelet serves it on another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubeconfig_alone_reaches_the_control_plane_through_the_api_server() {
    let Some(client) = cluster::client().await else {
        return;
    };
    if !cluster::is_stub() {
        eprintln!("skipped: the stand-in kubelet needs the stub cluster");
        return;
    }
    cluster::install_crds(&client).await;
    let ns = cluster::test_namespace(&client, "cli-forward").await;
    let kubeconfig = std::env::var("KUBECONFIG").expect("with-cluster sets KUBECONFIG");

    // A real controller serving remora.v1 over TLS, its certificate naming the Service.
    let ca_secret = "remora-mesh-ca";
    let mut config = injection::controller_config(&ns, "unused", ports::free_port());
    config.webhook = None;
    config.inject = None;
    config.settings.identity = Some(IdentitySettings {
        trust_domain: DEFAULT_TRUST_DOMAIN.into(),
    });
    config.identity = Some(IdentityConfig {
        trust_domain: DEFAULT_TRUST_DOMAIN.into(),
        namespace: ns.clone(),
        ca_secret: ca_secret.into(),
        cert_ttl: Duration::from_secs(3600),
        service_account: "remora".into(),
        server_names: vec![format!("remora.{ns}.svc")],
    });
    let controller = remora_controller::start(client.clone(), config)
        .await
        .expect("the controller starts");
    let kubelet = Kubelet::start(controller.xds_addr).await;

    // Its node, whose kubelet is the stand-in, and its pod there as the chart makes it.
    let env = serde_json::json!([{"name": "REMORA_MESH_CA_SECRET", "value": ca_secret}]);
    let node = cluster::stand_in_controller(&client, &ns, kubelet.port, env).await;

    // Off the runtime's threads: the controller and the stand-in kubelet serve the command.
    let cli = |args: Vec<String>| {
        let (kubeconfig, ns) = (kubeconfig.clone(), ns.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(remora_bin())
                .args(args)
                .args([
                    "--kubeconfig",
                    &kubeconfig,
                    "--control-plane-namespace",
                    &ns,
                ])
                .env_remove("KUBECONFIG")
                .output()
                .expect("remora runs")
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let out = cli(args(&["proxy-status", "-A", "-o", "json"]))
        .await
        .expect("the command ends");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert!(listed.get("proxies").is_some(), "{listed}");
    // The same way, a question the control plane answers with an error of its own.
    let out = cli(args(&["proxy-config", &format!("{ns}/nothing")]))
        .await
        .expect("the command ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("NotFound"), "{stderr}");
    let out = cli(args(&["proxy-config", &format!("{ns}/nothing"), "secrets"]))
        .await
        .expect("the command ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let missing = format!("no proxy {ns}/nothing is connected");
    assert!(stderr.contains(&missing), "{stderr}");

    controller.stop().await;
    Api::<Node>::all(client.clone())
        .delete(&node, &DeleteParams::default())
        .await
        .expect("delete the node");
    cluster::delete_namespace(&client, &ns).await;
}
