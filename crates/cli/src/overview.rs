//! `remora status`: the mesh at a glance, from the API server alone: every SidecarPolicy,
//! TrafficRoute and AccessPolicy with what its status says. Its exit code lets a script or
//! a CI job wait for, or gate on, a mesh whose every object is Ready about its latest spec.

mod view;

use std::process::ExitCode;

use kube::{Api, Client, Resource, api::ListParams};
use remora_api::{AccessPolicy, SidecarPolicy, TrafficRoute};
use serde::de::DeserializeOwned;

use crate::{cluster::ClusterArgs, output::Format, status::Scope};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Objects of every namespace (default: -n, else the kubeconfig context's namespace).
    #[arg(long, short = 'A', conflicts_with = "namespace")]
    all_namespaces: bool,
    /// How to print: a table with what holds each object back, or JSON or YAML.
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

/// 0: every object is Ready about its latest spec; 1: one is not, or its status is stale;
/// 2: the command could not tell.
pub fn run(args: &Args) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(overview(args)),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok((text, ready)) => {
            print!("{text}");
            ExitCode::from(if ready { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("remora: {e}");
            ExitCode::from(2)
        }
    }
}

/// The printed overview, and whether everything is Ready.
async fn overview(args: &Args) -> Result<(String, bool), String> {
    let cluster = args.cluster.connect().await?;
    let scope = Scope::of(
        args.all_namespaces,
        args.cluster.namespace.as_deref(),
        Some(&cluster.namespace),
    );
    let mut rows = Vec::new();
    for p in list::<SidecarPolicy>(&cluster.client, &scope).await? {
        rows.push(view::sidecar_policy(&p));
    }
    for r in list::<TrafficRoute>(&cluster.client, &scope).await? {
        rows.push(view::traffic_route(&r));
    }
    for p in list::<AccessPolicy>(&cluster.client, &scope).await? {
        rows.push(view::access_policy(&p));
    }
    let overview = view::overview(rows);
    let text = args
        .output
        .render(&overview, || view::table(&overview, &scope))?;
    Ok((text, overview.ready))
}

/// Every object of kind `K` in `scope`; an error names the kind and suggests the likely
/// cause of a 404.
async fn list<K>(client: &Client, scope: &Scope) -> Result<Vec<K>, String>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = match scope {
        Scope::All => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    };
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(format!(
            "cannot list {kind}s: {} (are Remora's CRDs installed?)",
            e.message
        )),
        Err(e) => Err(format!("cannot list {kind}s: {e}")),
    }
}
