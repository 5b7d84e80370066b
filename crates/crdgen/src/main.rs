//! Prints Remora's CustomResourceDefinitions. `crds/` (for kubectl) and the templates of the
//! `remora-crds` chart (for Helm, which upgrades templates but never a chart's `crds/`) hold
//! its output; `--check` fails when the files there differ from what the code generates.

mod files;
mod render;
mod template;

use std::process::ExitCode;

use files::Target;
use render::{Layout, render};

const USAGE: &str = "usage: crdgen [--write | --check] [DIR | --chart CHART_DIR]...";
/// What `scripts/test` checks, and so what to regenerate.
const WRITE_ALL: &str = "cargo run -q -p remora-crdgen -- --write crds --chart charts/remora-crds";

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Print,
    Write(Vec<Target>),
    Check(Vec<Target>),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = parse(&args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match command {
        Command::Print => print(),
        Command::Write(targets) => each(&targets, write),
        Command::Check(targets) => each(&targets, check),
    }
}

fn parse(args: &[String]) -> Option<Command> {
    let (mode, rest) = args
        .split_first()
        .map_or(("", &[][..]), |(m, r)| (m.as_str(), r));
    if mode.is_empty() {
        return Some(Command::Print);
    }
    let mut targets = Vec::new();
    let mut rest = rest.iter().map(String::as_str);
    while let Some(arg) = rest.next() {
        targets.push(match arg {
            "--chart" => Target::chart(rest.next()?),
            dir if !dir.starts_with('-') => Target::plain(dir),
            _ => return None,
        });
    }
    match mode {
        _ if targets.is_empty() => None,
        "--write" => Some(Command::Write(targets)),
        "--check" => Some(Command::Check(targets)),
        _ => None,
    }
}

fn print() -> ExitCode {
    let Some(files) = rendered(Layout::Plain) else {
        return ExitCode::FAILURE;
    };
    let yamls: Vec<&str> = files.iter().map(|f| f.yaml.as_str()).collect();
    print!("{}", yamls.join("---\n"));
    ExitCode::SUCCESS
}

fn each(targets: &[Target], action: fn(&Target) -> bool) -> ExitCode {
    // Every target, so that one run reports all stale folders.
    let failed = targets.iter().filter(|target| !action(target)).count();
    let ok = failed == 0;
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn write(target: &Target) -> bool {
    let Some(files) = rendered(target.layout) else {
        return false;
    };
    files::write(target, &files)
        .map_err(|(path, e)| eprintln!("crdgen: cannot write {}: {e}", path.display()))
        .is_ok()
}

fn check(target: &Target) -> bool {
    let Some(files) = rendered(target.layout) else {
        return false;
    };
    let stale = files::stale(target, &files);
    if !stale.is_empty() {
        let paths: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "crdgen: these CRD files differ from the Rust types: {}\nrun `{WRITE_ALL}` and commit the result",
            paths.join(", ")
        );
    }
    stale.is_empty()
}

fn rendered(layout: Layout) -> Option<Vec<render::File>> {
    render(layout)
        .map_err(|e| eprintln!("crdgen: cannot render the CRDs: {e}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn folders_and_charts_mix_on_one_command_line() {
        assert_eq!(
            parse(&args("--check crds --chart charts/remora-crds")),
            Some(Command::Check(vec![
                Target::plain("crds"),
                Target::chart("charts/remora-crds"),
            ]))
        );
        assert_eq!(parse(&[]), Some(Command::Print));
    }

    #[test]
    fn a_mode_without_folders_or_a_chart_without_its_folder_is_a_usage_error() {
        for line in [
            "--write",
            "--check --chart",
            "--check crds --bogus",
            "--fix crds",
        ] {
            assert_eq!(parse(&args(line)), None, "{line}");
        }
    }
}
