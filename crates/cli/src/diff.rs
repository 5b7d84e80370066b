//! `remora diff`: what applying some manifests would change in every proxy's Envoy config,
//! computed by the same model against the live cluster or a folder, before anything is
//! applied. Exit codes as `kubectl diff`: 0 no change, 1 changes, 2 no diff.

mod changes;
mod lines;

use std::{
    fmt::Write as _,
    io::Read as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use remora_api::spiffe::DEFAULT_TRUST_DOMAIN;
use remora_inputs::{Loaded, load_dir, load_text};
use remora_model::{
    Mesh,
    config::Addressing,
    input::{Event, IdentitySettings, MeshSettings, Object},
};
use serde::Serialize;

use crate::{cluster::ClusterArgs, output::Format, regex_limit::RegexLimit};
use changes::{Change, ProxyChanges, fleet_changes};

#[derive(clap::Args)]
pub struct Args {
    /// The manifests to try: a file, a folder, or `-` for standard input. Each object
    /// replaces the one of the same kind and name, or is added.
    #[arg(long, short = 'f')]
    filename: String,
    /// Compare against a folder of manifests (the state a GitOps repository describes)
    /// instead of the live cluster.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// How to print the changes.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: Format,
    #[command(flatten)]
    mesh: MeshArgs,
    #[command(flatten)]
    regex: RegexLimit,
    /// The cluster, for the live state; `-n` shows only that namespace's proxies.
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// The mesh the proxies run in, as `remora controller` is configured.
#[derive(clap::Args)]
struct MeshArgs {
    /// Compute as local mode serves (applications call their proxy on loopback); by default
    /// as a cluster runs: traffic captured, sidecars speaking mutual TLS.
    #[arg(long)]
    explicit: bool,
    /// The mesh's root namespace, where mesh-wide policies live.
    #[arg(long, default_value = "remora-system")]
    root_namespace: String,
    /// The trust domain of the workloads' identities.
    #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
}

impl MeshArgs {
    fn settings(&self, regex: RegexLimit) -> MeshSettings {
        let (addressing, identity) = if self.explicit {
            (Addressing::Explicit, None)
        } else {
            let identity = IdentitySettings {
                trust_domain: self.trust_domain.clone(),
            };
            (Addressing::Captured, Some(identity))
        };
        MeshSettings {
            root_namespace: self.root_namespace.clone(),
            addressing,
            identity,
            validation: regex.validation(),
            ..MeshSettings::default()
        }
    }
}

/// What `-o json|yaml` prints.
#[derive(Serialize)]
struct Report {
    /// The proxies whose config would change.
    proxies: Vec<ProxyChanges>,
    /// Problems of the objects tried: an invalid object changes nothing on the proxies.
    problems: Vec<String>,
}

pub fn run(args: &Args) -> ExitCode {
    match report(args) {
        Ok(report) => {
            let text = args.output.render(&report, || table(&report));
            match text {
                Ok(text) => print!("{text}"),
                Err(e) => return fail(&e),
            }
            if report.proxies.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &str) -> ExitCode {
    eprintln!("remora diff: {e}");
    ExitCode::from(2)
}

fn report(args: &Args) -> Result<Report, String> {
    let base = match &args.dir {
        Some(dir) => readable(load_dir(dir).map_err(|e| e.to_string())?)?,
        None => crate::live::read_cluster(&args.cluster)?.0,
    };
    let tried = readable(load_changes(&args.filename, base.len())?)?;
    let settings = args.mesh.settings(args.regex);
    let before = mesh(&settings, base.clone());
    // Applied onto the state before, as the cluster would: an invalid object keeps its
    // last valid spec in effect.
    let mut after = mesh(&settings, base.clone());
    after.apply(replacing(&base, &tried).into_iter().map(Event::Upsert));
    let tried_keys: Vec<_> = tried.iter().map(|o| o.key()).collect();
    let problems = after
        .problems()
        .into_iter()
        .filter(|p| tried_keys.contains(&p.key))
        .map(|p| p.to_string())
        .collect();
    let mut proxies = fleet_changes(&before, &after);
    if let Some(ns) = &args.cluster.namespace {
        proxies.retain(|p| p.proxy.split_once('/').is_some_and(|(n, _)| n == ns));
    }
    Ok(Report { proxies, problems })
}

fn mesh(settings: &MeshSettings, objects: Vec<Object>) -> Mesh {
    let mut mesh = Mesh::new(settings.clone());
    mesh.apply(objects.into_iter().map(Event::Upsert));
    mesh
}

/// The manifests of `-f`; `first` places new objects after the base's (the oldest object
/// wins ties, and a new one is the youngest).
fn load_changes(filename: &str, first: usize) -> Result<Loaded, String> {
    let mut loaded = Loaded::default();
    if filename == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("-f -: {e}"))?;
        load_text(Path::new("-"), &text, first, &mut loaded);
    } else if Path::new(filename).is_dir() {
        loaded = load_dir(Path::new(filename)).map_err(|e| e.to_string())?;
    } else {
        let text = std::fs::read_to_string(filename).map_err(|e| format!("-f {filename}: {e}"))?;
        load_text(Path::new(filename), &text, first, &mut loaded);
    }
    Ok(loaded)
}

/// The objects, or every document that could not be read: a diff of half a change misleads.
fn readable(loaded: Loaded) -> Result<Vec<Object>, String> {
    if loaded.problems.is_empty() {
        return Ok(loaded.objects);
    }
    let lines: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
    Err(format!("cannot read:\n  {}", lines.join("\n  ")))
}

/// The objects of `tried`, each that replaces one of `base` (same kind and name) with that
/// one's creation time, which decides precedence.
fn replacing(base: &[Object], tried: &[Object]) -> Vec<Object> {
    tried
        .iter()
        .map(|new| {
            let mut new = new.clone();
            let old = base
                .iter()
                .find(|o| o.kind() == new.kind() && o.key() == new.key());
            // Only the API's kinds carry a creation time; the model's own kinds need none.
            let created = old
                .cloned()
                .as_mut()
                .and_then(meta_mut)
                .and_then(|m| m.creation_timestamp.take());
            if let Some(is) = meta_mut(&mut new) {
                is.creation_timestamp = created.or(is.creation_timestamp.take());
            }
            new
        })
        .collect()
}

fn meta_mut(o: &mut Object) -> Option<&mut ObjectMeta> {
    match o {
        Object::SidecarPolicy(p) => Some(&mut p.metadata),
        Object::TrafficRoute(r) => Some(&mut r.metadata),
        Object::AccessPolicy(a) => Some(&mut a.metadata),
        Object::HttpRoute(r) => Some(&mut r.metadata),
        Object::GrpcRoute(r) => Some(&mut r.metadata),
        _ => None,
    }
}

/// Per proxy, each resource that changes and its changed lines; then the tally.
fn table(report: &Report) -> String {
    let mut out = String::new();
    for p in &report.proxies {
        let _ = writeln!(out, "proxy {}", p.proxy);
        for r in &p.resources {
            let sign = match r.change {
                Change::Added => '+',
                Change::Removed => '-',
                Change::Changed => '~',
            };
            let _ = writeln!(out, "  {sign} {:?} {}", r.kind, r.name);
            for line in &r.lines {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
    for p in &report.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    let _ = writeln!(out, "{} proxies would change", report.proxies.len());
    out
}
