//! The API server side of a run: the client, the CRDs, writing the mesh, and deleting it
//! again. Only a cluster `e2e/cluster/with-cluster` provides is used (a plain KUBECONFIG
//! may name a cluster a benchmark must not fill with ten thousand pods), and only
//! namespaces that did not exist before are written to.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
    },
};
use remora_api::{SidecarPolicy, TrafficRoute};
use serde_json::Value;
use tracing::warn;

use crate::mesh::{ApiMesh, PodObjects};

/// How often a call the API server refused for the moment is tried again, and how long
/// apart (the delay doubles up to a second).
const RETRIES: u32 = 40;
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// How long teardown waits for the namespaces to be gone.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(180);

/// Why the cluster could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Not run under `e2e/cluster/with-cluster`.
    #[error(
        "no benchmark cluster: REMORA_E2E_CLUSTER is unset; run under e2e/cluster/with-cluster \
         (scripts/bench-fleet-status does), which starts a fresh API server"
    )]
    NoCluster,
    /// The kubeconfig could not be read.
    #[error("KUBECONFIG names no usable cluster: {0}")]
    Config(#[from] kube::config::InferConfigError),
    /// The client could not be built.
    #[error("cannot build a client for the cluster: {0}")]
    Client(#[source] kube::Error),
    /// A namespace of the mesh exists already.
    #[error(
        "namespace {0} exists already; fleet-bench writes only namespaces it creates: use a \
         fresh cluster (e2e/cluster/with-cluster starts one)"
    )]
    Exists(String),
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was asked for.
        what: String,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// A CRD was not served in time.
    #[error("the CRD {0} is not served after 10 s")]
    Crd(String),
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Api { what, source }
}

/// A client for the benchmark cluster.
pub async fn client() -> Result<Client, ClusterError> {
    if std::env::var_os("REMORA_E2E_CLUSTER").is_none() {
        return Err(ClusterError::NoCluster);
    }
    let config = kube::Config::infer().await?;
    Client::try_from(config).map_err(ClusterError::Client)
}

/// Installs both CRDs (as the code generates them; older servers drop what they do not
/// know) unless present, and waits until they are served.
pub async fn install_crds(client: &Client) -> Result<(), ClusterError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [TrafficRoute::crd(), SidecarPolicy::crd()] {
        let name = crd.name_any();
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(api_error(format!("creating the CRD {name}"))(e)),
        }
    }
    let routes: Api<TrafficRoute> = Api::all(client.clone());
    let policies: Api<SidecarPolicy> = Api::all(client.clone());
    for _ in 0..100 {
        let lp = Default::default();
        if routes.list(&lp).await.is_ok() && policies.list(&lp).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ClusterError::Crd(
        "trafficroutes/sidecarpolicies.remora.dev".into(),
    ))
}

/// Fails when any of `names` exists.
pub async fn preflight(client: &Client, names: &[String]) -> Result<(), ClusterError> {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        let found = api
            .get_opt(name)
            .await
            .map_err(api_error(format!("looking up namespace {name}")))?;
        if found.is_some() {
            return Err(ClusterError::Exists(name.clone()));
        }
    }
    Ok(())
}

/// Writes every object of `mesh`, `concurrency` calls at a time, kind after kind; returns
/// how long it took.
pub async fn create(
    client: &Client,
    mesh: &ApiMesh,
    concurrency: usize,
) -> Result<Duration, ClusterError> {
    let started = Instant::now();
    let n = concurrency.max(1);
    each(&mesh.namespaces, n, |o| create_value(client, o)).await?;
    each(&mesh.service_accounts, n, |o| create_value(client, o)).await?;
    each(&mesh.policies, n, |p| create_typed(client, p)).await?;
    each(&mesh.services, n, |o| create_value(client, o)).await?;
    each(&mesh.slices, n, |o| create_value(client, o)).await?;
    each(&mesh.pods, n, |p| create_pod(client, p)).await?;
    each(&mesh.routes, n, |r| create_typed(client, r)).await?;
    Ok(started.elapsed())
}

/// Runs `call` on every item, at most `concurrency` at once; the first error ends it.
async fn each<'a, T, F, Fut>(
    items: &'a [T],
    concurrency: usize,
    call: F,
) -> Result<(), ClusterError>
where
    F: Fn(&'a T) -> Fut,
    Fut: Future<Output = Result<(), ClusterError>>,
{
    futures::stream::iter(items.iter().map(call))
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

/// Tries `call` again while the API server refuses it for the moment: too many requests,
/// a server error, or a ServiceAccount its admission cache does not hold yet.
async fn retried<T, Fut>(what: &str, call: impl Fn() -> Fut) -> Result<T, ClusterError>
where
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delay = FIRST_RETRY;
    for _ in 0..RETRIES {
        match call().await {
            Err(kube::Error::Api(e))
                if e.code == 429 || e.code >= 500 || e.message.contains("service account") =>
            {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            other => return other.map_err(api_error(what)),
        }
    }
    call().await.map_err(api_error(what))
}

/// The API of an object given as JSON, from its `apiVersion` and `kind`.
fn dynamic_api(
    client: &Client,
    object: &Value,
) -> Result<(Api<DynamicObject>, DynamicObject), ClusterError> {
    let object: DynamicObject = serde_json::from_value(object.clone())
        .map_err(|e| api_error("reading a planned object")(kube::Error::SerdeError(e)))?;
    let types = object.types.clone().unwrap_or_default();
    let (group, version) = match types.api_version.split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), types.api_version.clone()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &types.kind);
    let plural = format!("{}s", types.kind.to_lowercase());
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let api = match object.metadata.namespace.as_deref() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    Ok((api, object))
}

async fn create_value(client: &Client, object: &Value) -> Result<(), ClusterError> {
    let (api, object) = dynamic_api(client, object)?;
    let what = format!("creating {} {}", api.resource_url(), object.name_any());
    let pp = PostParams::default();
    retried(&what, || api.create(&pp, &object)).await?;
    Ok(())
}

async fn create_typed<K>(client: &Client, object: &K) -> Result<(), ClusterError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let ns = object.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let what = format!("creating {ns}/{}", object.name_any());
    let pp = PostParams::default();
    retried(&what, || api.create(&pp, object)).await?;
    Ok(())
}

/// Creates the pod, then reports it running and ready at its IP, as a kubelet would.
async fn create_pod(client: &Client, pod: &PodObjects) -> Result<(), ClusterError> {
    let (api, object) = dynamic_api(client, &pod.pod)?;
    let name = object.name_any();
    let what = format!(
        "creating pod {}/{name}",
        object.namespace().unwrap_or_default()
    );
    let pp = PostParams::default();
    retried(&what, || api.create(&pp, &object)).await?;
    let what = format!("reporting pod {name} running");
    let (patch, params) = (Patch::Merge(&pod.status), PatchParams::default());
    retried(&what, || api.patch_status(&name, &params, &patch)).await?;
    Ok(())
}

/// Deletes `names` and waits (bounded) until they are gone; returns those still there.
/// Errors are logged, not returned: teardown runs after failures too, and must try every
/// namespace.
pub async fn teardown(client: &Client, names: &[String]) -> Vec<String> {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => warn!(namespace = %name, error = %e, "cannot delete a namespace of the run"),
        }
    }
    let deadline = Instant::now() + TEARDOWN_TIMEOUT;
    loop {
        let mut left = Vec::new();
        for name in names {
            match api.get_opt(name).await {
                Ok(None) => {}
                // Unknown counts as still there: the report says so rather than guessing.
                Ok(Some(_)) | Err(_) => left.push(name.clone()),
            }
        }
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
