//! `remora proxy-status` and `remora proxy-config`: what the control plane says about its
//! proxies, over the remora.v1 API. By default they reach the control plane of the
//! kubeconfig's cluster through its API server, as kubectl reaches a pod (`forward`);
//! `--server` dials an address instead (local mode, or a port-forward of one's own).

pub(crate) mod forward;
mod view;

use std::{
    collections::HashMap, error::Error, path::PathBuf, process::ExitCode, time::Duration,
    time::SystemTime,
};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};
use remora_admin::pb::{self, proxies_client::ProxiesClient};
use remora_identity::{TrustBundle, dial, tls::client_config};
use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::{cluster::ClusterArgs, output::Format};
pub use view::Scope;
use view::{Section, State, Workload};

/// How long a call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the control plane is and how to prove who you are to it.
#[derive(clap::Args)]
pub struct Connection {
    /// The control plane's gRPC address, dialed directly: local mode's 127.0.0.1:15010, or a
    /// port-forward of your own. Without it, the control plane of the kubeconfig's cluster is
    /// reached through the API server (a port-forward to a ready controller pod).
    #[arg(long)]
    server: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The namespace the control plane runs in (its Helm release's).
    #[arg(long, default_value = "remora-system")]
    control_plane_namespace: String,
    /// The labels of the controller pods (the chart's Deployment selector).
    #[arg(long, default_value = forward::CONTROLLER_SELECTOR)]
    control_plane_selector: String,
    /// The mesh's trust bundle (PEM) to check the control plane's certificate with: the
    /// `ca.crt` of its CA Secret, which is read through the API server when not given. With
    /// --server and without it, the call is plaintext, as `remora local --insecure` serves.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The name the control plane's certificate is checked for (default: its Service's,
    /// `<service>.<namespace>.svc`; with --server, the host of --server).
    #[arg(long)]
    server_name: Option<String>,
    /// A file holding a bearer token the API server accepts (default: the kubeconfig user's
    /// token, when it has one); RBAC must let its user get/list proxies.remora.dev.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    connection: Connection,
    /// Proxies of every namespace (default: -n, else the kubeconfig context's namespace;
    /// with --server and no -n, every namespace).
    #[arg(long, short = 'A', conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Only proxies in this state: NACKED if a type is, else STALE if a type is, else SYNCED.
    #[arg(long, value_enum)]
    state: Option<State>,
    /// Only the proxies of this workload's pods, as `Kind/name` (e.g. `Deployment/web`); the
    /// pods are read through the API server, so not with --server.
    #[arg(long, value_parser = Workload::parse)]
    workload: Option<Workload>,
    /// How to print: a table with Envoy's words for every rejection, or JSON or YAML.
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

#[derive(clap::Args)]
pub struct ConfigArgs {
    /// The proxy: POD (in -n, else the kubeconfig context's namespace) or NAMESPACE/POD.
    proxy: String,
    /// Only these resources.
    #[arg(value_enum)]
    section: Option<Section>,
    #[command(flatten)]
    connection: Connection,
    /// How to print: one line per resource (kind, name, version), or the whole config as
    /// JSON or YAML.
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

/// Adds the bearer token, when there is one, to every call.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = ProxiesClient<InterceptedService<Channel, Bearer>>;

/// A client of the control plane, and what the caller needs to know of how it was reached.
struct Connected {
    client: Client,
    /// The kubeconfig context's namespace, when the cluster was reached through it.
    context_namespace: Option<String>,
    /// The API server's client, when the cluster was reached through it.
    cluster: Option<kube::Client>,
    /// Whether calls carry a bearer token (without one, the control plane knows no caller).
    with_token: bool,
}

async fn connect(c: &Connection) -> Result<Connected, String> {
    let mut token = match &c.token_file {
        Some(file) => Some(read_token(file)?),
        None => None,
    };
    let (channel, cluster) = match &c.server {
        Some(server) => (direct(c, server).await?, None),
        None => {
            let cluster = c.cluster.connect().await?;
            if token.is_none() {
                token = cluster.token.clone();
            }
            let channel = forward::channel(&cluster.client, c).await?;
            (channel, Some(cluster))
        }
    };
    let header = token
        .map(|t| {
            MetadataValue::try_from(format!("Bearer {t}"))
                .map_err(|_| "the bearer token is not printable ASCII".to_owned())
        })
        .transpose()?;
    Ok(Connected {
        with_token: header.is_some(),
        client: ProxiesClient::with_interceptor(channel, Bearer(header)),
        context_namespace: cluster.as_ref().map(|c| c.namespace.clone()),
        cluster: cluster.map(|c| c.client),
    })
}

/// A channel to `server`: TLS with --ca-file, else plaintext.
async fn direct(c: &Connection, server: &str) -> Result<Channel, String> {
    match &c.ca_file {
        Some(file) => {
            let config = client_config(&bundle_file(file)?, None).map_err(|e| e.to_string())?;
            let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
            let name = c.server_name.as_deref().unwrap_or(host);
            dial(server, name, config, CALL_TIMEOUT)
                .await
                .map_err(|e| e.to_string())
        }
        None => Endpoint::from_shared(format!("http://{server}"))
            .map_err(|e| format!("--server {server}: {e}"))?
            .timeout(CALL_TIMEOUT)
            .connect()
            .await
            .map_err(|e| format!("cannot reach the control plane at {server}: {}", causes(&e))),
    }
}

fn bundle_file(file: &std::path::Path) -> Result<TrustBundle, String> {
    let pem =
        std::fs::read_to_string(file).map_err(|e| format!("--ca-file {}: {e}", file.display()))?;
    TrustBundle::from_pem(&pem).map_err(|e| format!("--ca-file {}: {e}", file.display()))
}

/// The token a --token-file holds; never quoted in an error.
fn read_token(file: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(file)
        .map(|t| t.trim().to_owned())
        .map_err(|e| format!("--token-file {}: {e}", file.display()))
}

/// What a refused or failed call says, with what to do when the caller sent no token.
fn call_error(e: &Status, with_token: bool) -> String {
    let text = format!("{:?}: {}", e.code(), e.message());
    if e.code() == Code::Unauthenticated && !with_token {
        return format!(
            "{text} (the kubeconfig's user has no bearer token, e.g. it signs in with a client \
             certificate: pass --token-file with one, e.g. from `kubectl create token`)"
        );
    }
    text
}

/// An error and its sources, `a: b: c` (tonic's own says only "transport error"); a source
/// whose words are already there (kube's errors repeat theirs) is not told twice.
fn causes(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        source = cause.source();
    }
    text
}

fn block_on<F: std::future::Future<Output = Result<String, String>>>(f: F) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(f));
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("remora: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Each pod's workload by (namespace, name), for the pods of `scope`.
async fn workloads(
    client: kube::Client,
    scope: &Scope,
) -> Result<HashMap<(String, String), String>, String> {
    let api: Api<Pod> = match scope {
        Scope::All => Api::all(client),
        Scope::Namespace(ns) => Api::namespaced(client, ns),
    };
    let pods = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("--workload: cannot list pods: {e}"))?;
    Ok(pods
        .items
        .iter()
        .filter_map(|pod| {
            let meta = &pod.metadata;
            let key = (meta.namespace.clone()?, meta.name.clone()?);
            Some((key, remora_inject::workload(pod)?))
        })
        .collect())
}

pub fn status(args: &StatusArgs) -> ExitCode {
    block_on(async {
        if let (Some(_), Some(server)) = (&args.workload, &args.connection.server) {
            return Err(format!(
                "--workload reads the pods through the API server, with the kubeconfig: \
                 drop --server {server}"
            ));
        }
        let Connected {
            mut client,
            context_namespace,
            cluster,
            with_token,
        } = connect(&args.connection).await?;
        let scope = Scope::of(
            args.all_namespaces,
            args.connection.cluster.namespace.as_deref(),
            context_namespace.as_deref(),
        );
        let list = client
            .list(pb::ListProxiesRequest {
                namespace: scope.namespace().to_owned(),
            })
            .await
            .map_err(|e| call_error(&e, with_token))?
            .into_inner();
        let mut proxies = view::filter(&list.proxies, args.state);
        if let (Some(workload), Some(cluster)) = (&args.workload, cluster) {
            let pods = workloads(cluster, &scope).await?;
            proxies = view::of_workload(proxies, workload, &pods);
        }
        let now = SystemTime::now();
        args.output.render(&view::listing(&proxies), || {
            view::table(&proxies, &scope, args.state, args.workload.as_ref(), now)
        })
    })
}

pub fn config(args: &ConfigArgs) -> ExitCode {
    block_on(async {
        let Connected {
            mut client,
            context_namespace,
            with_token,
            ..
        } = connect(&args.connection).await?;
        let (namespace, name) = view::proxy_name(
            &args.proxy,
            args.connection.cluster.namespace.as_deref(),
            context_namespace.as_deref(),
        )?;
        let resources = if args.section == Some(Section::Secrets) {
            // Not in the config: the pod's agent serves them; the listing has what was issued.
            let list = client
                .list(pb::ListProxiesRequest {
                    namespace: namespace.clone(),
                })
                .await
                .map_err(|e| call_error(&e, with_token))?
                .into_inner();
            let proxy = list.proxies.iter().find(|p| p.name == name);
            let proxy = proxy.ok_or_else(|| format!("no proxy {namespace}/{name} is connected"))?;
            view::secrets(proxy, SystemTime::now())
        } else {
            let r = client
                .get_config(pb::GetConfigRequest {
                    namespace: namespace.clone(),
                    name: name.clone(),
                })
                .await
                .map_err(|e| call_error(&e, with_token))?
                .into_inner();
            view::section(&r.json, args.section)
                .map_err(|e| format!("the config of {namespace}/{name}: {e}"))?
        };
        args.output
            .render(&resources, || view::config_table(&resources))
    })
}
