//! `remora analyze`: every problem in a folder of manifests or in the live cluster, under its
//! rule code (docs/analyze.md), with an exit code a CI job can gate on.

use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

use remora_analyze::{Finding, Input, Severity, analyze, unusable};
use remora_api::ValidationSettings;
use remora_inputs::load_dir;
use serde::Serialize;

use crate::{cluster::ClusterArgs, output::Format, regex_limit::RegexLimit};

#[derive(clap::Args)]
pub struct Args {
    /// A folder of manifests (a GitOps repository, say) to analyze offline; without it, the
    /// live cluster of the kubeconfig's context.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Fail on warnings too.
    #[arg(long)]
    warnings_as_errors: bool,
    /// How to print the findings.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: Format,
    #[command(flatten)]
    regex: RegexLimit,
    /// The cluster, for a live analysis; `-n` reports only that namespace's objects (the
    /// whole mesh is still read, as routes and policies reach across namespaces).
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// What `-o json|yaml` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    errors: usize,
    warnings: usize,
    findings: &'a [Finding],
}

/// Exit codes: 0 clean (or warnings only), 1 findings that fail the run, 2 no analysis.
pub fn run(args: &Args) -> ExitCode {
    let validation = args.regex.validation();
    let found = match &args.dir {
        Some(dir) => from_folder(dir, validation),
        None => from_cluster(&args.cluster, validation),
    };
    let mut found = match found {
        Ok(found) => found,
        Err(e) => {
            eprintln!("remora analyze: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(ns) = &args.cluster.namespace {
        found.retain(|f| in_namespace(f, ns));
    }
    let report = Report {
        errors: count(&found, Severity::Error),
        warnings: count(&found, Severity::Warning),
        findings: &found,
    };
    match args.output.render(&report, || table(&report)) {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("remora analyze: {e}");
            return ExitCode::from(2);
        }
    }
    let fails = report.errors > 0 || (args.warnings_as_errors && report.warnings > 0);
    if fails {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn from_folder(
    dir: &std::path::Path,
    validation: ValidationSettings,
) -> Result<Vec<Finding>, String> {
    let loaded = load_dir(dir).map_err(|e| e.to_string())?;
    Ok(analyze(&Input {
        objects: &loaded.objects,
        origins: &loaded.origins,
        unreadable: &loaded.problems,
        validation,
    }))
}

fn from_cluster(
    cluster: &ClusterArgs,
    validation: ValidationSettings,
) -> Result<Vec<Finding>, String> {
    let (objects, unusable_objects) = crate::live::read_cluster(cluster)?;
    let mut found = analyze(&Input {
        objects: &objects,
        origins: &[],
        unreadable: &[],
        validation,
    });
    found.extend(
        unusable_objects
            .into_iter()
            .map(|u| unusable(u.kind, u.name, u.reason)),
    );
    found.sort();
    Ok(found)
}

/// Whether a finding is about an object of `namespace` (a Namespace counts as its own).
fn in_namespace(f: &Finding, namespace: &str) -> bool {
    let Some(object) = f.object.as_deref() else {
        return false;
    };
    match f.kind {
        Some("Namespace") => object == namespace,
        _ => object
            .split_once('/')
            .is_some_and(|(ns, _)| ns == namespace),
    }
}

fn count(found: &[Finding], severity: Severity) -> usize {
    found.iter().filter(|f| f.severity == severity).count()
}

/// One line per finding, then the tally.
fn table(report: &Report<'_>) -> String {
    let mut out = String::new();
    for f in report.findings {
        let _ = writeln!(out, "{f}");
    }
    let _ = writeln!(
        out,
        "{} error(s), {} warning(s)",
        report.errors, report.warnings
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_filter_keeps_that_namespaces_objects_and_itself() {
        let at = |kind: &'static str, object: &str| Finding {
            kind: Some(kind),
            object: Some(object.into()),
            ..example()
        };
        assert!(in_namespace(&at("TrafficRoute", "demo/reviews"), "demo"));
        assert!(in_namespace(&at("Namespace", "demo"), "demo"));
        assert!(!in_namespace(&at("Namespace", "shop"), "demo"));
        assert!(!in_namespace(&at("TrafficRoute", "shop/cart"), "demo"));
        assert!(!in_namespace(&example(), "demo"));
    }

    fn example() -> Finding {
        Finding {
            file: None,
            document: None,
            kind: None,
            object: None,
            code: "REM001",
            rule: "unreadable-manifest",
            severity: Severity::Error,
            field: None,
            message: "not valid YAML".into(),
        }
    }

    #[test]
    fn the_table_ends_with_the_tally() {
        let found = [example()];
        let report = Report {
            errors: 1,
            warnings: 0,
            findings: &found,
        };
        assert_eq!(
            table(&report),
            "error REM001 unreadable-manifest: not valid YAML\n1 error(s), 0 warning(s)\n"
        );
    }
}
