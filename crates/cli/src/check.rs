//! `remora check`: is this cluster ready for Remora (`--pre`), and is the installed Remora
//! healthy: the API server's version and what it implies, the CRDs, the webhooks, the
//! controller's pods and the proxies' versions. Exit 1 when a check fails.

mod verdicts;

use std::{fmt::Write as _, process::ExitCode};

use k8s_openapi::{
    api::{
        admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
        core::v1::{Pod, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt,
    api::{ListParams, PostParams},
};
use remora_api::{AccessPolicy, SidecarPolicy, TrafficRoute, crd_schema};
use remora_controller::endpoints::EndpointApi;
use remora_identity::TrustBundle;
use remora_inject::ServerVersion;
use serde::Serialize;
use verdicts::{Outcome, Verdict, verdict};

use crate::{cluster::ClusterArgs, output::Format, status::forward::CONTROLLER_SELECTOR};

/// The webhooks the chart registers, by the name each carries.
const WEBHOOKS: [(&str, bool); 2] = [("validate.remora.dev", false), ("inject.remora.dev", true)];

#[derive(clap::Args)]
pub struct Args {
    /// Before installing: only the API server's version and features, and the CRDs.
    #[arg(long)]
    pre: bool,
    /// Where Remora's controller runs.
    #[arg(long, default_value = "remora-system")]
    control_plane_namespace: String,
    /// Its pods' labels.
    #[arg(long, default_value = CONTROLLER_SELECTOR)]
    control_plane_selector: String,
    /// How to print the verdicts.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: Format,
    /// The cluster; `-n` checks only that namespace's policies' proxy versions.
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Serialize)]
struct Report {
    checks: Vec<Verdict>,
}

pub fn run(args: &Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e.to_string()),
    };
    let checks = match rt.block_on(checks(args)) {
        Ok(checks) => checks,
        Err(e) => return fail(&e),
    };
    let report = Report { checks };
    match args.output.render(&report, || table(&report.checks)) {
        Ok(text) => print!("{text}"),
        Err(e) => return fail(&e),
    }
    if report.checks.iter().any(|c| c.outcome == Outcome::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn fail(e: &str) -> ExitCode {
    eprintln!("remora check: {e}");
    ExitCode::from(2)
}

async fn checks(args: &Args) -> Result<Vec<Verdict>, String> {
    let cluster = args.cluster.connect().await?;
    let client = &cluster.client;
    let info = client
        .apiserver_version()
        .await
        .map_err(|e| format!("the API server does not answer: {e}"))?;
    let version = ServerVersion::from_info(&info).map_err(|e| e.to_string())?;
    let mut out = vec![verdict(
        "api-server",
        Outcome::Ok,
        format!("Kubernetes {} answers", info.git_version),
    )];
    out.extend(verdicts::server_features(version));
    out.push(verdicts::endpoints(EndpointApi::discover(client).await));
    out.extend(crds(client, args.pre).await?);
    if args.pre {
        return Ok(out);
    }
    out.push(control_plane(client, args).await?);
    out.extend(webhooks(client, &args.control_plane_namespace).await?);
    out.push(proxy_versions(client, args.cluster.namespace.as_deref()).await?);
    Ok(out)
}

async fn crds(client: &Client, pre: bool) -> Result<Vec<Verdict>, String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let built = [
        (TrafficRoute::crd_name(), crd_schema::<TrafficRoute>()),
        (SidecarPolicy::crd_name(), crd_schema::<SidecarPolicy>()),
        (AccessPolicy::crd_name(), crd_schema::<AccessPolicy>()),
    ];
    let mut out = Vec::new();
    for (name, schema) in built {
        let installed = api
            .get_opt(name)
            .await
            .map_err(|e| format!("reading CRD {name}: {e}"))?;
        let installed = installed.as_ref().and_then(|c| {
            c.spec
                .versions
                .iter()
                .find(|v| v.served)
                .and_then(|v| v.schema.as_ref()?.open_api_v3_schema.as_ref())
        });
        out.push(verdicts::crd(name, installed, &schema, pre));
    }
    Ok(out)
}

async fn control_plane(client: &Client, args: &Args) -> Result<Verdict, String> {
    let namespace = &args.control_plane_namespace;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&args.control_plane_selector);
    let found = pods
        .list(&params)
        .await
        .map_err(|e| format!("listing the controller's pods in {namespace}: {e}"))?;
    let ready = found.items.iter().filter(|p| is_ready(p)).count();
    Ok(verdicts::control_plane(namespace, ready, found.items.len()))
}

fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A webhook as its configuration registers it.
struct Registered {
    name: String,
    ca_bundle: Option<Vec<u8>>,
    service: Option<(String, String)>,
}

/// Each chart webhook whose Service is in the control plane's namespace: registered, with a
/// CA bundle that parses, its Service there, and (for the validating one) answering: a
/// dry-run of an invalid route must come back refused by it.
async fn webhooks(client: &Client, namespace: &str) -> Result<Vec<Verdict>, String> {
    let mut registered = registrations(client, |c: ValidatingWebhookConfiguration| {
        let webhooks = c.webhooks.into_iter().flatten();
        webhooks
            .map(|w| registration(w.name, w.client_config))
            .collect()
    })
    .await?;
    registered.extend(
        registrations(client, |c: MutatingWebhookConfiguration| {
            let webhooks = c.webhooks.into_iter().flatten();
            webhooks
                .map(|w| registration(w.name, w.client_config))
                .collect()
        })
        .await?,
    );
    let mut out = Vec::new();
    for (name, mutating) in WEBHOOKS {
        let ours = registered
            .iter()
            .find(|r| r.name == name && r.service.as_ref().is_some_and(|(ns, _)| ns == namespace));
        let v = match ours {
            None => verdict(
                "webhooks",
                Outcome::Fail,
                format!("{name}: not registered for a Service in {namespace}"),
            ),
            Some(r) => webhook(client, r, mutating).await,
        };
        out.push(v);
    }
    Ok(out)
}

/// Every webhook the configurations of kind `K` register, by `webhooks` of one.
async fn registrations<K>(
    client: &Client,
    webhooks: impl Fn(K) -> Vec<Registered>,
) -> Result<Vec<Registered>, String>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list = Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.items.into_iter().flat_map(webhooks).collect())
}

fn registration(
    name: String,
    config: k8s_openapi::api::admissionregistration::v1::WebhookClientConfig,
) -> Registered {
    Registered {
        name,
        ca_bundle: config.ca_bundle.map(|b| b.0),
        service: config.service.map(|s| (s.namespace, s.name)),
    }
}

async fn webhook(client: &Client, r: &Registered, mutating: bool) -> Verdict {
    let name = &r.name;
    let Some((namespace, service)) = &r.service else {
        return verdict("webhooks", Outcome::Fail, format!("{name}: no Service"));
    };
    let bundle = r.ca_bundle.as_deref().unwrap_or_default();
    if let Err(e) = std::str::from_utf8(bundle)
        .map_err(|e| e.to_string())
        .and_then(|pem| TrustBundle::from_pem(pem).map_err(|e| e.to_string()))
    {
        return verdict(
            "webhooks",
            Outcome::Fail,
            format!("{name}: its caBundle is no CA the API server can use: {e}"),
        );
    }
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    if let Ok(None) | Err(_) = services.get_opt(service).await {
        return verdict(
            "webhooks",
            Outcome::Fail,
            format!("{name}: its Service {namespace}/{service} does not exist"),
        );
    }
    if mutating {
        return verdict(
            "webhooks",
            Outcome::Ok,
            format!("{name}: registered, CA bundle valid, Service {namespace}/{service}"),
        );
    }
    answers(client, name, namespace).await
}

/// Whether the validating webhook answers: a dry run of an invalid route in `namespace` must
/// come back refused by it (nothing is stored).
async fn answers(client: &Client, name: &str, namespace: &str) -> Verdict {
    let routes: Api<TrafficRoute> = Api::namespaced(client.clone(), namespace);
    let invalid: Result<TrafficRoute, _> = serde_json::from_value(serde_json::json!({
        "apiVersion": "remora.dev/v1alpha1", "kind": "TrafficRoute",
        "metadata": {"name": "remora-check-dry-run"},
        "spec": {"parentRefs": [{"name": "remora-check"}],
                 "http": [{"name": "Not-A-Name", "backendRefs": [{"name": "remora-check"}]}]},
    }));
    let Ok(invalid) = invalid else {
        return verdict(
            "webhooks",
            Outcome::Fail,
            format!("{name}: no test route could be built"),
        );
    };
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match routes.create(&params, &invalid).await {
        Err(kube::Error::Api(e)) if e.message.contains("denied the request") => verdict(
            "webhooks",
            Outcome::Ok,
            format!("{name}: answers (it refused an invalid route in a dry run)"),
        ),
        Err(e) => verdict(
            "webhooks",
            Outcome::Fail,
            format!("{name}: does not answer: {e}"),
        ),
        Ok(_) => verdict(
            "webhooks",
            Outcome::Warn,
            format!(
                "{name}: an invalid route passed a dry run: the webhook is down under failurePolicy Ignore, or does not match"
            ),
        ),
    }
}

async fn proxy_versions(client: &Client, namespace: Option<&str>) -> Result<Verdict, String> {
    let api: Api<SidecarPolicy> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let policies = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing SidecarPolicies: {e}"))?;
    let mut versions = Vec::new();
    for p in &policies.items {
        let key = format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or_default(),
            p.metadata.name.as_deref().unwrap_or_default()
        );
        versions.push((key.clone(), p.spec.proxy.version.clone()));
        for v in p.status.iter().flat_map(|s| &s.versions) {
            versions.push((key.clone(), v.version.clone()));
        }
    }
    Ok(verdicts::proxy_versions(
        versions.iter().map(|(p, v)| (p.as_str(), v.as_str())),
    ))
}

/// One line per check: `[ok]`, `[warn]` or `[FAIL]`, its name and what it found.
fn table(checks: &[Verdict]) -> String {
    let mut out = String::new();
    for c in checks {
        let mark = match c.outcome {
            Outcome::Ok => "[ok]  ",
            Outcome::Warn => "[warn]",
            Outcome::Fail => "[FAIL]",
        };
        let _ = writeln!(out, "{mark} {}: {}", c.check, c.message);
    }
    let failed = checks.iter().filter(|c| c.outcome == Outcome::Fail).count();
    let _ = writeln!(out, "{failed} of {} checks failed", checks.len());
    out
}
