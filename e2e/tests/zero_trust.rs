//! Zero trust, end to end: a real API server, the controller's webhook injecting the identity
//! agent beside each proxy, the pod runner running exactly that spec (a projected
//! ServiceAccount token from the TokenRequest API, the agent's socket in an `emptyDir`), real
//! iptables and real Envoys speaking mutual TLS with certificates of the mesh CA.
//!
//! - Two meshed pods talk over mTLS: the server app receives the caller's SPIFFE ID in
//!   `x-forwarded-client-cert`, and the server proxy counts TLS handshakes.
//! - A pod without a sidecar is served by a `Permissive` workload and refused by a `Strict`
//!   one, whose HTTP readiness probe still passes (moved to the proxy's readiness port).
//! - xDS and the certificate service give nothing to a stranger: no credentials, a forged
//!   token, a token for another audience, another pod's node id.
//! - `remora.v1` answers a cluster admin and refuses a pod's own ServiceAccount.
//! - Certificates of a 20 s lifetime renew under steady traffic, and the mesh's root is
//!   rotated (new root trusted, then signing, then the old one dropped), with no failed
//!   request.

mod support;

use std::time::Duration;

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        DeltaDiscoveryRequest,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{Pod, Secret, ServiceAccount},
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use remora_admin::pb::{ListProxiesRequest, proxies_client::ProxiesClient};
use remora_api::SidecarPolicy;
use remora_ca::pb::{CertifyRequest, CertifyResponse, identity_client::IdentityClient};
use remora_identity::{
    CertifiedIdentity, CurrentCert, Issued, MeshCa, SpiffeId, TrustBundle, WorkloadKey, dial,
    tls::client_config,
};
use serde_json::{Value, json};
use support::{
    apps::fetch,
    eventually, meshed,
    pods::container::{ECHO_IMAGE, remora_bin},
    scene::{Objects, Options, Scene},
};
use tonic::{Code, Request, transport::Channel};

const HTTP_PORT: u16 = 8080;
/// Short, so that every certificate renews several times during the test.
const TTL: Duration = Duration::from_secs(20);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn policies() -> [Value; 3] {
    let policy = |name: &str, tier: &str, mtls: Value| {
        json!({
            "apiVersion": "remora.dev/v1alpha1", "kind": "SidecarPolicy",
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"tier": tier}},
                     "proxy": {"image": "envoyproxy/envoy", "version": "v1.40.0"},
                     "mtls": mtls,
                     // Only this namespace: the shared cluster holds other tests' objects.
                     "egress": {"hosts": ["./*"]},
                     "traffic": {"accessLog": {"format": "Text"}}}
        })
    };
    [
        policy("strict", "strict", json!({"mode": "Strict"})),
        policy("servers", "server", json!({})),
        policy("clients", "client", json!({})),
    ]
}

fn services() -> [Value; 2] {
    let service = |name: &str, port: u16| {
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": "http", "port": port, "targetPort": HTTP_PORT}]}
        })
    };
    [service("strict", 9080), service("permissive", 9081)]
}

/// A one-replica Deployment of the echo app, named `name`; `probe` its readiness probe.
fn deployment(name: &str, labels: Value, probe: Value, inject: bool) -> Value {
    let mut labels = labels;
    labels["deployment"] = json!(name);
    let annotations = if inject {
        json!({})
    } else {
        json!({"sidecar.remora.dev/inject": "false"})
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"deployment": name}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"containers": [{
                    "name": "app", "image": format!("{ECHO_IMAGE}:1"),
                    "args": ["--listen", format!("0.0.0.0:{HTTP_PORT}"), "--name", name],
                    "ports": [{"name": "http", "containerPort": HTTP_PORT}],
                    "readinessProbe": probe
                }]}
            }
        }
    })
}

fn deployments() -> Vec<Value> {
    let tcp = json!({"tcpSocket": {"port": HTTP_PORT}, "periodSeconds": 1});
    // Under Strict the kubelet's plaintext would be refused: the injector moves this probe.
    let http = json!({"httpGet": {"port": "http", "path": "/healthz"}, "periodSeconds": 1});
    vec![
        deployment(
            "strict",
            json!({"app": "strict", "tier": "strict"}),
            http,
            true,
        ),
        deployment(
            "permissive",
            json!({"app": "permissive", "tier": "server"}),
            tcp.clone(),
            true,
        ),
        deployment("client", json!({"tier": "client"}), tcp.clone(), true),
        deployment("plain", json!({"tier": "plain"}), tcp, false),
    ]
}

/// What the zero-trust scene adds to a meshed one.
trait ZeroTrust {
    fn workload_id(&self) -> String;
    fn secrets(&self) -> Api<Secret>;
    async fn bundle(&self) -> TrustBundle;
    async fn channel(&self, cert: Option<CurrentCert>) -> Channel;
    async fn token(&self, audience: Option<&str>, pod: Option<&str>) -> String;
}

impl ZeroTrust for Scene {
    /// The SPIFFE ID of the test's pods (they run as the namespace's `default`).
    fn workload_id(&self) -> String {
        SpiffeId::new("cluster.local", &self.ns, "default").to_string()
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The mesh's trust bundle as the CA's Secret holds it now.
    async fn bundle(&self) -> TrustBundle {
        let secret = self.secrets().get(meshed::CA_SECRET).await.expect("the CA");
        let pem = secret
            .data
            .and_then(|d| d.get("ca.crt").cloned())
            .expect("ca.crt");
        TrustBundle::from_pem(&String::from_utf8(pem.0).expect("PEM")).expect("a bundle")
    }

    /// A channel to the control plane's gRPC port, presenting `cert` if given.
    async fn channel(&self, cert: Option<CurrentCert>) -> Channel {
        let config = client_config(&self.bundle().await, cert).expect("a TLS config");
        let address = self.controller.xds_addr.to_string();
        let name = self.controller.xds_addr.ip().to_string();
        dial(&address, &name, config, CALL_TIMEOUT)
            .await
            .expect("the control plane's port")
    }

    /// A token for the namespace's `default` ServiceAccount, bound to `pod`'s pod when given.
    async fn token(&self, audience: Option<&str>, pod: Option<&str>) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let bound = match pod {
            Some(name) => {
                let p = pods.get(name).await.expect("the pod");
                Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(name.into()),
                    uid: p.metadata.uid,
                })
            }
            None => None,
        };
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(audience.into_iter().map(str::to_owned).collect()),
                expiration_seconds: Some(600),
                bound_object_ref: bound,
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.ns);
        let answer = accounts
            .create_token_request("default", &PostParams::default(), &request)
            .await
            .expect("a token");
        answer.status.and_then(|s| s.token).expect("a token")
    }
}

/// One counter of the proxy in `netns` whose name ends with `suffix`, summed over matches.
async fn stat_sum(netns: &str, pattern: &str) -> u64 {
    let url = format!("http://127.0.0.1:15000/stats?filter={pattern}");
    let lines = fetch(netns, &url, 1, &["--body"]).await;
    lines
        .iter()
        .filter_map(|l| l.rsplit_once(": "))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

/// Meshed client to both servers: every call over mTLS, the server app told who called; with
/// `fresh`, over new connections, counted by the servers' proxies.
async fn assert_mtls_between_sidecars(sc: &Scene, fresh: bool) {
    let client = sc.netns("client");
    let caller = format!("URI={}", sc.workload_id());
    for (url, server) in [
        ("http://permissive:9081/", "permissive"),
        ("http://strict:9080/", "strict"),
    ] {
        let before = stat_sum(&sc.netns(server), "ssl.handshake$").await;
        let lines = fetch(&client, url, 5, &[]).await;
        for line in &lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words.first(), Some(&"200"), "{url}: {lines:?}");
            assert_eq!(words.get(1), Some(&server), "{url}: {lines:?}");
            assert!(
                words.get(3).is_some_and(|xfcc| xfcc.contains(&caller)),
                "{url}: the app sees the caller's identity: {lines:?}"
            );
        }
        let after = stat_sum(&sc.netns(server), "ssl.handshake$").await;
        assert!(
            !fresh || after > before,
            "{server}: TLS handshakes {before} -> {after}"
        );
    }
}

/// Each policy's status says the mode its workloads run in, and how many.
async fn assert_policies_count_their_workloads_by_mode(sc: &Scene) {
    let policies: Api<SidecarPolicy> = Api::namespaced(sc.client.clone(), &sc.ns);
    for (name, mode) in [("strict", "Strict"), ("servers", "Permissive")] {
        eventually(30, "the policy's mTLS count", async || {
            let policy = policies.get(name).await.ok()?;
            let status = serde_json::to_value(policy.status?).ok()?;
            (status["mtls"] == json!({"mode": mode, "workloads": 1})).then_some(())
        })
        .await;
    }
}

/// A pod without a sidecar: plaintext is served by `Permissive`, closed by `Strict`; a
/// forged identity header does not reach the app.
async fn assert_plaintext_by_mode(sc: &Scene) {
    let plain = sc.netns("plain");
    let permissive = format!("http://{}:{HTTP_PORT}/", sc.ip("permissive"));
    let forged = "x-forwarded-client-cert: URI=spiffe://cluster.local/ns/x/sa/admin";
    let lines = fetch(&plain, &permissive, 3, &["--header", forged]).await;
    for line in &lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[..2], ["200", "permissive"], "{lines:?}");
        assert_eq!(
            words.get(3),
            Some(&"-"),
            "no identity, none forged: {lines:?}"
        );
    }
    let strict = format!("http://{}:{HTTP_PORT}/", sc.ip("strict"));
    let lines = fetch(&plain, &strict, 3, &[]).await;
    assert!(lines.iter().all(|l| l.starts_with("error")), "{lines:?}");
}

/// An ADS stream that sends one request as `node` and reads what comes back.
async fn ads(channel: Channel, node: &str) -> Result<usize, tonic::Status> {
    let request = DeltaDiscoveryRequest {
        node: Some(Node {
            id: node.into(),
            ..Node::default()
        }),
        type_url: remora_xds::snapshot::CLUSTER.into(),
        ..DeltaDiscoveryRequest::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request).await.expect("queued");
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut responses = client
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = tokio::time::timeout(CALL_TIMEOUT, responses.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no response"))??;
    drop(tx);
    Ok(first.map_or(0, |r| r.resources.len()))
}

/// Asks the certificate service, as a pod's agent does, for a certificate of
/// `service_account`'s identity in the test's namespace, for a new key, proved by `token`
/// (none: no credentials at all); the key and the answer.
async fn certify(
    sc: &Scene,
    service_account: &str,
    token: Option<&str>,
) -> (WorkloadKey, Result<CertifyResponse, tonic::Status>) {
    let key = WorkloadKey::generate().expect("a key");
    let id = SpiffeId::new("cluster.local", &sc.ns, service_account);
    let mut request = Request::new(CertifyRequest {
        csr: key.csr_pem(&id).expect("a CSR"),
    });
    if let Some(token) = token {
        let bearer = format!("Bearer {token}").parse().expect("ASCII");
        request.metadata_mut().insert("authorization", bearer);
    }
    let answer = IdentityClient::new(sc.channel(None).await)
        .certify(request)
        .await
        .map(tonic::Response::into_inner);
    (key, answer)
}

/// A certificate for the client pod, got as its agent gets one: its bound token.
async fn client_certificate(sc: &Scene) -> CurrentCert {
    let token = sc.token(Some("remora"), Some(sc.pod("client"))).await;
    let (key, answer) = certify(sc, "default", Some(&token)).await;
    let answer = answer.expect("a certificate for a pod's own token");
    let issued = Issued {
        chain_pem: answer.chain,
        not_before: std::time::SystemTime::now(),
        not_after: std::time::SystemTime::now() + TTL,
    };
    let cert = CurrentCert::default();
    cert.set(&CertifiedIdentity::new(&issued, &key).expect("the key's certificate"));
    cert
}

/// Strangers get nothing: neither a certificate nor any config.
async fn assert_strangers_get_nothing(sc: &Scene) {
    let refused = async |token: Option<String>| {
        let (_, answer) = certify(sc, "default", token.as_deref()).await;
        answer.map(|_| ()).expect_err("refused").code()
    };
    assert_eq!(refused(None).await, Code::Unauthenticated, "no credentials");
    let forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6eDp5In0.c2ln";
    assert_eq!(
        refused(Some(forged.into())).await,
        Code::Unauthenticated,
        "forged"
    );
    let other_audience = sc.token(Some("other"), Some(sc.pod("client"))).await;
    assert_eq!(
        refused(Some(other_audience)).await,
        Code::Unauthenticated,
        "audience"
    );
    let unbound = sc.token(Some("remora"), None).await;
    assert_eq!(
        refused(Some(unbound)).await,
        Code::Unauthenticated,
        "not bound to a pod"
    );
    // A token as the API server mints it, signed with its key: good until it expires.
    let fresh = minted_token(sc, 600).await;
    let (_, answer) = certify(sc, "default", Some(&fresh)).await;
    answer.expect("a minted token that has not expired is taken");
    let expired = minted_token(sc, -60).await;
    assert_eq!(
        refused(Some(expired)).await,
        Code::Unauthenticated,
        "expired"
    );

    // A pod that proved itself but asks for another identity: refused, and told on the pod.
    let token = sc.token(Some("remora"), Some(sc.pod("client"))).await;
    let (_, answer) = certify(sc, "admin", Some(&token)).await;
    let wrong = answer.expect_err("another identity");
    assert_eq!(wrong.code(), Code::PermissionDenied);
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(sc.client.clone(), &sc.ns);
    eventually(
        30,
        "a CertificateRefused event on the client pod",
        async || {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("CertificateRefused")
                        && e.involved_object.name.as_deref() == Some(sc.pod("client"))
                })
                .then_some(())
        },
    )
    .await;

    let client_node = format!("{}/{}", sc.ns, sc.pod("client"));
    let anonymous = ads(sc.channel(None).await, &client_node).await;
    assert_eq!(
        anonymous.expect_err("refused").code(),
        Code::Unauthenticated
    );
    let cert = client_certificate(sc).await;
    let impostor = format!("{}/{}", sc.ns, sc.pod("permissive"));
    let refused = ads(sc.channel(Some(cert.clone())).await, &impostor).await;
    assert_eq!(refused.expect_err("refused").code(), Code::PermissionDenied);
    // The same certificate for its own pod: served (the refusals above are not a broken port).
    let own = ads(sc.channel(Some(cert)).await, &client_node).await;
    assert!(own.expect("served") > 0);
}

/// `remora.v1` answers who RBAC lets read proxies: the cluster admin, not a pod.
async fn assert_api_needs_rbac(sc: &Scene) {
    let list = async |token: &str| {
        let mut request = Request::new(ListProxiesRequest {
            namespace: sc.ns.clone(),
        });
        let bearer = format!("Bearer {token}").parse().expect("ASCII");
        request.metadata_mut().insert("authorization", bearer);
        ProxiesClient::new(sc.channel(None).await)
            .list(request)
            .await
            .map(|r| r.into_inner().proxies.len())
    };
    let admin = admin_token();
    assert_eq!(list(&admin).await.expect("an admin may"), 3);
    let pod_token = sc.token(None, Some(sc.pod("client"))).await;
    let refused = list(&pod_token).await.expect_err("a pod may not");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let anonymous = ProxiesClient::new(sc.channel(None).await)
        .list(ListProxiesRequest::default())
        .await
        .expect_err("no credentials");
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    // The same through `remora proxy-status`, as an operator runs it.
    let dir = tempfile::tempdir().expect("a temp dir");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, sc.bundle().await.to_pem()).expect("the bundle");
    let status = |token: &str| {
        let file = dir.path().join("token");
        std::fs::write(&file, token).expect("the token");
        std::process::Command::new(remora_bin())
            .arg("proxy-status")
            .args(["--server", &sc.controller.xds_addr.to_string()])
            .arg("--ca-file")
            .arg(&ca)
            .arg("--token-file")
            .arg(&file)
            .args(["-n", &sc.ns])
            .output()
            .expect("remora runs")
    };
    let out = status(&admin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains(&format!("{}/{}", sc.ns, sc.pod("client"))),
        "{text}"
    );
    let out = status(&pod_token);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PermissionDenied"), "{err}");
}

/// The bearer token of the test cluster's admin (group `system:masters`).
fn admin_token() -> String {
    std::env::var("REMORA_ADMIN_TOKEN").expect("the e2e cluster's admin token (cluster.env)")
}

/// A ServiceAccount token for the client pod as the API server would mint it (audience
/// `remora`, bound to the pod), signed with the cluster's own service-account key, expiring
/// `expires_in` seconds from now (negative: expired).
async fn minted_token(sc: &Scene, expires_in: i64) -> String {
    let pods: Api<Pod> = Api::namespaced(sc.client.clone(), &sc.ns);
    let pod = pods.get(sc.pod("client")).await.expect("the client pod");
    let accounts: Api<ServiceAccount> = Api::namespaced(sc.client.clone(), &sc.ns);
    let account = accounts.get("default").await.expect("the ServiceAccount");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let claims = json!({
        "aud": ["remora"], "iss": "https://kubernetes.default.svc.cluster.local",
        "iat": now - 700, "nbf": now - 700, "exp": now + expires_in,
        "sub": format!("system:serviceaccount:{}:default", sc.ns),
        "kubernetes.io": {
            "namespace": sc.ns,
            "pod": {"name": sc.pod("client"), "uid": pod.metadata.uid},
            "serviceaccount": {"name": "default", "uid": account.metadata.uid},
        }
    });
    let ca = std::env::var("REMORA_CA_FILE").expect("the cluster's CA file (cluster.env)");
    let key = std::path::Path::new(&ca).with_file_name("sa.key");
    let script = r#"b64() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
        h=$(printf '%s' '{"alg":"RS256"}' | b64); p=$(printf '%s' "$CLAIMS" | b64)
        s=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -sign "$KEY" | b64)
        printf '%s.%s.%s' "$h" "$p" "$s""#;
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .env("CLAIMS", claims.to_string())
        .env("KEY", key)
        .output()
        .expect("sh and openssl run");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("a token")
}

/// Steady traffic while certificates renew and the root rotates: not one failed request.
async fn assert_rotation_loses_nothing(sc: &Scene) {
    let client = sc.netns("client");
    let traffic = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut lines = Vec::new();
            // About 110 s at one request per 100 ms, both servers in turn.
            for round in 0..550 {
                let url = if round % 2 == 0 {
                    "http://strict:9080/"
                } else {
                    "http://permissive:9081/"
                };
                lines.extend(fetch(&client, url, 1, &[]).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            lines
        })
    };
    let old = sc.secrets().get(meshed::CA_SECRET).await.expect("the CA");
    let new = MeshCa::generate("cluster.local", std::time::SystemTime::now()).expect("a root");
    let old_bundle = sc.bundle().await;
    let both = old_bundle.merged(new.bundle());
    // 1. Both roots trusted; the old one still signs. Every proxy renews meanwhile.
    write_ca(sc, &old, None, &both).await;
    tokio::time::sleep(TTL + TTL / 2).await;
    // 2. The new root signs; both still trusted. Every certificate is renewed from it.
    write_ca(sc, &old, Some(&new), &both).await;
    tokio::time::sleep(TTL + TTL / 2).await;
    // 3. The old root is no longer trusted.
    write_ca(sc, &old, Some(&new), new.bundle()).await;
    tokio::time::sleep(TTL).await;
    let lines = traffic.await.expect("the traffic task");
    let failed: Vec<_> = lines.iter().filter(|l| !l.starts_with("200")).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        lines.len()
    );
    assert_eq!(sc.bundle().await, new.bundle().clone());
    // Still talking (on pooled connections, which a new certificate does not close), and
    // every proxy took its renewed certificates over SDS all along.
    assert_mtls_between_sidecars(sc, false).await;
    for deployment in ["client", "strict", "permissive"] {
        let renewals = stat_sum(&sc.netns(deployment), "^sds.default.update_success$").await;
        assert!(
            renewals >= 5,
            "{deployment}: {renewals} certificates over SDS"
        );
    }
}

/// Writes the CA's Secret: signing with `signer` (the old CA as stored when `None`),
/// trusting `bundle`.
async fn write_ca(sc: &Scene, old: &Secret, signer: Option<&MeshCa>, bundle: &TrustBundle) {
    let data = old.data.clone().unwrap_or_default();
    let text = |key: &str| String::from_utf8(data[key].0.clone()).expect("PEM");
    let (cert, key) = match signer {
        Some(ca) => {
            let pem = ca.to_pem();
            (pem.cert_chain, pem.key)
        }
        None => (text("tls.crt"), text("tls.key")),
    };
    let patch = json!({"stringData": {"tls.crt": cert, "tls.key": key, "ca.crt": bundle.to_pem()}});
    sc.secrets()
        .patch(
            meshed::CA_SECRET,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("the CA's Secret");
}

/// No private key in what the mesh writes: the agents' and proxies' logs, the namespace's
/// Events, the policies' status.
async fn assert_no_key_material_leaks(sc: &Scene) {
    let key = "PRIVATE KEY";
    for deployment in ["client", "strict", "permissive"] {
        for container in [remora_inject::AGENT_CONTAINER, meshed::PROXY] {
            let log = sc.runner.log(sc.pod(deployment), container);
            assert!(!log.is_empty(), "{deployment}/{container} logged nothing");
            assert!(!log.contains(key), "{deployment}/{container} logged a key");
        }
    }
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(sc.client.clone(), &sc.ns);
    let list = events.list(&Default::default()).await.expect("events");
    let text = serde_json::to_string(&list.items).expect("JSON");
    assert!(!text.contains(key), "an Event holds a key");
    let policies: Api<SidecarPolicy> = Api::namespaced(sc.client.clone(), &sc.ns);
    let list = policies.list(&Default::default()).await.expect("policies");
    let text = serde_json::to_string(&list.items).expect("JSON");
    assert!(!text.contains(key), "a policy's status holds a key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_trust() {
    let options = Options {
        delta: true,
        probe_labels: json!({"tier": "client"}),
        identity: Some(TTL),
    };
    let Some(sc) = Scene::start("zero-trust", options, |_| Objects {
        policies: policies().into(),
        services: services().into(),
        deployments: deployments(),
        ..Objects::default()
    })
    .await
    else {
        return;
    };
    eventually(60, "every proxy synced", async || {
        let proxies = sc.controller.xds.all();
        (proxies.len() == 3).then_some(())
    })
    .await;
    sc.await_endpoints("client", &["strict", "permissive"])
        .await;
    assert_mtls_between_sidecars(&sc, true).await;
    assert_policies_count_their_workloads_by_mode(&sc).await;
    assert_plaintext_by_mode(&sc).await;
    assert_api_needs_rbac(&sc).await;
    // Last of the proxies' status: its own-pod control stream replaces the client proxy's.
    assert_strangers_get_nothing(&sc).await;
    assert_rotation_loses_nothing(&sc).await;
    assert_no_key_material_leaks(&sc).await;
    assert_eq!(sc.runner.failures(), Vec::<String>::new());
    sc.stop().await;
}
