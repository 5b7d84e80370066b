//! Prints Remora's CustomResourceDefinitions. `crds/` and the chart's `crds/` hold its output;
//! `--check DIR` fails when the files there differ from what the code generates.

use std::{fs, path::Path, process::ExitCode};

use kube::CustomResourceExt;
use remora_api::{AccessPolicy, SidecarPolicy, TrafficRoute};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let files = match render() {
        Ok(files) => files,
        Err(e) => {
            eprintln!("crdgen: cannot render the CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {
            for (i, (_, yaml)) in files.iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                print!("{yaml}");
            }
            ExitCode::SUCCESS
        }
        ["--write", dirs @ ..] if !dirs.is_empty() => write_all(dirs, &files),
        ["--check", dirs @ ..] if !dirs.is_empty() => check_all(dirs, &files),
        _ => {
            eprintln!("usage: crdgen [--write DIR... | --check DIR...]");
            ExitCode::from(2)
        }
    }
}

/// One file per CRD, named `<group>_<plural>.yaml` as controller-gen does.
fn render() -> Result<Vec<(String, String)>, serde_yaml_ng::Error> {
    [
        SidecarPolicy::crd(),
        TrafficRoute::crd(),
        AccessPolicy::crd(),
    ]
    .into_iter()
    .map(|crd| {
        let name = format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural);
        Ok((name, serde_yaml_ng::to_string(&crd)?))
    })
    .collect()
}

fn write_all(dirs: &[&str], files: &[(String, String)]) -> ExitCode {
    for dir in dirs {
        for (name, yaml) in files {
            let path = Path::new(dir).join(name);
            if let Err(e) = fs::create_dir_all(dir).and_then(|()| fs::write(&path, yaml)) {
                eprintln!("crdgen: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn check_all(dirs: &[&str], files: &[(String, String)]) -> ExitCode {
    let mut stale = Vec::new();
    for dir in dirs {
        for (name, yaml) in files {
            let path = Path::new(dir).join(name);
            if fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                stale.push(path.display().to_string());
            }
        }
    }
    if stale.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "crdgen: these CRD files differ from the Rust types: {}\nrun `cargo run -q -p remora-crdgen -- --write crds charts/remora/crds` and commit the result",
        stale.join(", ")
    );
    ExitCode::FAILURE
}
