//! The same binary as a kubectl plugin: for `kubectl remora …` kubectl runs the program
//! `kubectl-remora` it finds on PATH, so a link of that name to `remora` is the plugin. Its
//! help, usage and errors then say `kubectl remora`, the command the user typed.

use std::{ffi::OsStr, path::Path};

use clap::{CommandFactory, FromArgMatches};

/// The program file kubectl looks for.
const PLUGIN_FILE: &str = "kubectl-remora";

/// The command's name for the program file `argv0` (with any `.exe`) was run as.
fn name_for(argv0: &OsStr) -> &'static str {
    match Path::new(argv0).file_stem() {
        Some(stem) if stem == PLUGIN_FILE => "kubectl remora",
        _ => "remora",
    }
}

/// `P`'s command, named for the program file `argv0`.
fn command<P: CommandFactory>(argv0: &OsStr) -> clap::Command {
    let name = name_for(argv0);
    P::command().name(name).bin_name(name)
}

/// Parses the command line as [`clap::Parser::parse`] does, under the name it was run as.
pub fn parse<P: CommandFactory + FromArgMatches>() -> P {
    let args: Vec<_> = std::env::args_os().collect();
    let mut command = command::<P>(args.first().map_or(OsStr::new(""), |a| a.as_os_str()));
    let matches = command.clone().get_matches_from(args);
    P::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_as_kubectl_remora_it_names_itself_as_kubectl_does() {
        assert_eq!(
            name_for("/usr/local/bin/kubectl-remora".as_ref()),
            "kubectl remora"
        );
        assert_eq!(name_for("kubectl-remora.exe".as_ref()), "kubectl remora");
        assert_eq!(name_for("target/debug/remora".as_ref()), "remora");
        assert_eq!(name_for("kubectl-remora-old".as_ref()), "remora");

        let argv0 = "/home/me/.krew/bin/kubectl-remora";
        let err = command::<crate::Cli>(argv0.as_ref())
            .try_get_matches_from([argv0, "proxy-status", "--no-such-flag"])
            .expect_err("an unknown flag");
        let text = err.render().to_string();
        assert!(
            text.contains("Usage: kubectl remora proxy-status"),
            "{text}"
        );
        let help = command::<crate::Cli>(argv0.as_ref())
            .render_help()
            .to_string();
        assert!(help.contains("Usage: kubectl remora <COMMAND>"), "{help}");
    }
}
