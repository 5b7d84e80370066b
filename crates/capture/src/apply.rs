//! Programming the rules in the current network namespace: the crate's only I/O.
//!
//! [`apply`] picks an iptables backend ([`BackendChoice`], logged), restores each family's
//! nat table with that backend's `*-restore` (the rendered text on standard input), then reads
//! the table back with the same backend's `*-save -t nat` and checks that our chains hold the
//! rules rendered and that `PREROUTING` and `OUTPUT` jump into them. Every failure is an
//! [`ApplyError`] naming the command, with its standard error.
//!
//! IPv6 is skipped, with a warning and a [`FamilyOutcome::Skipped`] saying why, when
//! `ip6tables` is not installed, the kernel has no IPv6, or the kernel refuses the IPv6
//! rules; but only while the pod has no routable IPv6 address. With one, the same problems
//! are errors: IPv6 connections would bypass the proxy.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    str::FromStr,
};

use crate::{
    Capture, Family,
    rules::{self, CHAINS},
};

/// Which iptables backend to program, as asked for (`--iptables-backend`).
///
/// `Auto` looks for legacy rules without creating the legacy nat table: it reads the legacy
/// table only when the kernel lists it (`/proc/net/ip_tables_names`), since merely running
/// `iptables-legacy-save` would create it and fool later detection (istio/istio#61020).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// nf_tables, unless the legacy nat table already holds rules (an earlier run, or another
    /// tool of the pod, used legacy): then legacy, so the pod's rules stay in one place.
    Auto,
    /// nf_tables (`iptables-nft-*`), what current distributions use.
    Nft,
    /// The legacy x_tables interface (`iptables-legacy-*`).
    Legacy,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "nft" => Ok(BackendChoice::Nft),
            "legacy" => Ok(BackendChoice::Legacy),
            other => Err(format!(
                "{other:?} is no iptables backend: auto, nft or legacy"
            )),
        }
    }
}

/// The iptables backend the rules are programmed and read back with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// nf_tables.
    Nft,
    /// Legacy x_tables.
    Legacy,
}

impl Backend {
    /// The backend's command for a family and an action, e.g. `ip6tables-nft-restore`.
    pub fn command(self, family: Family, action: &str) -> String {
        format!("{}-{self}-{action}", family.command_prefix())
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        })
    }
}

/// What [`apply`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The backend used.
    pub backend: Backend,
    /// Why that backend.
    pub reason: String,
    /// Per family, IPv4 first.
    pub families: Vec<FamilyOutcome>,
}

/// What happened to one family's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FamilyOutcome {
    /// Restored and read back.
    Programmed {
        /// The family.
        family: Family,
        /// The restore command that programmed it.
        command: String,
        /// The text restored.
        rules: String,
    },
    /// Left out, and why (the pod has no routable address of this family).
    Skipped {
        /// The family.
        family: Family,
        /// Why.
        reason: String,
    },
}

/// Why the rules could not be programmed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A command is not installed.
    #[error("{command}: not found on PATH, in /usr/sbin or in /sbin (install Debian's iptables)")]
    Missing {
        /// The command.
        command: String,
    },
    /// A command could not be started or fed.
    #[error("{command}: {source}")]
    Io {
        /// The command line.
        command: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error.
        stderr: String,
    },
    /// The table read back does not hold what was restored.
    #[error("{command} shows the {family} rules were not programmed: {problem}")]
    NotApplied {
        /// The save command that read the table back.
        command: String,
        /// The family.
        family: Family,
        /// What is missing or different.
        problem: String,
    },
    /// The kernel has no IPv6 (no `/proc/net/if_inet6`).
    #[error("the kernel has no IPv6 (no {IF_INET6})")]
    NoKernelIpv6,
    /// IPv6 could not be programmed while the pod has a routable IPv6 address.
    #[error("{problem}, yet the pod has IPv6 address(es) {addresses}: IPv6 would bypass the proxy")]
    Ipv6Needed {
        /// Why IPv6 could not be programmed.
        problem: String,
        /// The pod's routable IPv6 addresses.
        addresses: String,
    },
}

/// Programs `capture` in the current network namespace, both families, and reads it back.
pub fn apply(capture: &Capture, choice: BackendChoice) -> Result<Applied, ApplyError> {
    let (backend, reason) = choose_backend(choice)?;
    tracing::info!(%backend, %reason, "iptables backend chosen");
    let families = Family::ALL
        .into_iter()
        .map(|family| apply_family(capture, backend, family))
        .collect::<Result<_, _>>()?;
    Ok(Applied {
        backend,
        reason,
        families,
    })
}

fn choose_backend(choice: BackendChoice) -> Result<(Backend, String), ApplyError> {
    match choice {
        BackendChoice::Nft => return Ok((Backend::Nft, "asked for nft".into())),
        BackendChoice::Legacy => return Ok((Backend::Legacy, "asked for legacy".into())),
        BackendChoice::Auto => {}
    }
    for family in Family::ALL {
        // Reading a legacy table that does not exist would create it (and make later
        // detection, ours or another tool's, see legacy tables): ask the kernel first.
        let names = legacy_table_names(family);
        if !std::fs::read_to_string(names).is_ok_and(|t| t.lines().any(|l| l == "nat")) {
            continue;
        }
        let save = Backend::Legacy.command(family, "save");
        // The kernel has a legacy nat table: its rules must be readable to decide.
        let path = locate(&save).ok_or(ApplyError::Missing { command: save })?;
        let saved = run(&path, &["-t", "nat"], None)?;
        let rules = saved.lines().filter(|l| l.starts_with("-A ")).count();
        if rules > 0 {
            let why = format!("auto: the legacy {family} nat table holds {rules} rules");
            return Ok((Backend::Legacy, why));
        }
    }
    Ok((
        Backend::Nft,
        "auto: no rules in the legacy nat tables".into(),
    ))
}

/// The kernel's list of the legacy tables in use in this network namespace.
fn legacy_table_names(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "/proc/net/ip_tables_names",
        Family::Ipv6 => "/proc/net/ip6_tables_names",
    }
}

fn apply_family(
    capture: &Capture,
    backend: Backend,
    family: Family,
) -> Result<FamilyOutcome, ApplyError> {
    let text = rules::render(capture, family);
    let restore = backend.command(family, "restore");
    let save = backend.command(family, "save");
    let programmed = (|| {
        let (restore_path, save_path) = match (locate(&restore), locate(&save)) {
            (Some(r), Some(s)) => (r, s),
            (None, _) => {
                return Err(ApplyError::Missing {
                    command: restore.clone(),
                });
            }
            (_, None) => {
                return Err(ApplyError::Missing {
                    command: save.clone(),
                });
            }
        };
        if family == Family::Ipv6 && !Path::new(IF_INET6).exists() {
            return Err(ApplyError::NoKernelIpv6);
        }
        run(&restore_path, &[], Some(&text))?;
        let saved = run(&save_path, &["-t", "nat"], None)?;
        check_saved(&saved, &text).map_err(|problem| ApplyError::NotApplied {
            command: format!("{save} -t nat"),
            family,
            problem,
        })
    })();
    match programmed {
        Ok(()) => {
            tracing::info!(%family, command = %restore, "nat rules programmed and read back");
            Ok(FamilyOutcome::Programmed {
                family,
                command: restore,
                rules: text,
            })
        }
        Err(e) if family == Family::Ipv6 && !matches!(e, ApplyError::NotApplied { .. }) => {
            skip_ipv6(e)
        }
        Err(e) => Err(e),
    }
}

const IF_INET6: &str = "/proc/net/if_inet6";

/// IPv6 that could not be programmed is skipped while the pod has no routable IPv6 address.
fn skip_ipv6(problem: ApplyError) -> Result<FamilyOutcome, ApplyError> {
    let addresses = std::fs::read_to_string(IF_INET6)
        .map(|text| routable_ipv6(&text))
        .unwrap_or_default();
    if !addresses.is_empty() {
        return Err(ApplyError::Ipv6Needed {
            problem: problem.to_string(),
            addresses: addresses.join(", "),
        });
    }
    let reason = format!("{problem}; the pod has no routable IPv6 address");
    tracing::warn!(%reason, "IPv6 nat rules skipped");
    Ok(FamilyOutcome::Skipped {
        family: Family::Ipv6,
        reason,
    })
}

/// The addresses of global scope in `/proc/net/if_inet6` (32 hex digits, index, prefix
/// length, scope, flags, interface), written as 8 groups of 4 hex digits.
fn routable_ipv6(if_inet6: &str) -> Vec<String> {
    if_inet6
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (hex, scope) = (fields.first()?, fields.get(3)?);
            (*scope == "00" && hex.len() == 32).then(|| {
                let groups: Vec<&str> = (0..8).filter_map(|g| hex.get(g * 4..g * 4 + 4)).collect();
                format!("{} ({})", groups.join(":"), fields.get(5).unwrap_or(&"?"))
            })
        })
        .collect()
}

/// Checks a table read back (`*-save -t nat`) against the text restored: our chains exist and
/// hold as many rules per target as rendered, and the built-in chains jump into them as
/// rendered. Counting by target is immune to how `*-save` rewrites matches (`-m tcp`, `/32`).
fn check_saved(saved: &str, rendered: &str) -> Result<(), String> {
    let missing: Vec<&str> = CHAINS
        .into_iter()
        .filter(|chain| !saved.lines().any(|l| l.starts_with(&format!(":{chain} "))))
        .collect();
    if !missing.is_empty() {
        return Err(format!("no chain {}", missing.join(", ")));
    }
    let (want, got) = (ours_by_target(rendered), ours_by_target(saved));
    if want == got {
        return Ok(());
    }
    let keys: BTreeSet<_> = want.keys().chain(got.keys()).collect();
    let problems: Vec<String> = keys
        .into_iter()
        .filter(|k| want.get(*k) != got.get(*k))
        .map(|(chain, target)| {
            let (w, g) = (want.get(&(chain, target)), got.get(&(chain, target)));
            format!(
                "{chain} -j {target}: {} rule(s) expected, {} found",
                w.unwrap_or(&0),
                g.unwrap_or(&0)
            )
        })
        .collect();
    Err(problems.join("; "))
}

/// `(chain, target) -> rules` for the rules in our chains or jumping into them.
fn ours_by_target(text: &str) -> BTreeMap<(&str, &str), usize> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rule) = line.strip_prefix("-A ") else {
            continue;
        };
        let chain = rule.split_whitespace().next().unwrap_or_default();
        let target = rule
            .rsplit_once(" -j ")
            .and_then(|(_, t)| t.split_whitespace().next())
            .unwrap_or_default();
        if CHAINS.contains(&chain) || CHAINS.contains(&target) {
            *counts.entry((chain, target)).or_default() += 1;
        }
    }
    counts
}

/// A command on `PATH`, else in `/usr/sbin` or `/sbin` (where Debian puts iptables, often
/// missing from a container's `PATH`).
fn locate(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs a command, feeding `stdin`; its standard output, or an error with its standard error.
fn run(path: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, ApplyError> {
    let command = std::iter::once(path.display().to_string())
        .chain(args.iter().map(|a| (*a).to_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let io = |source| ApplyError::Io {
        command: command.clone(),
        source,
    };
    let mut child = Command::new(path)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io)?;
    // A command that exits early breaks the pipe; its status and stderr then say why.
    let fed = match (stdin, child.stdin.take()) {
        (Some(text), Some(mut pipe)) => pipe.write_all(text.as_bytes()),
        _ => Ok(()),
    };
    let output = child.wait_with_output().map_err(io)?;
    if !output.status.success() {
        return Err(ApplyError::Failed {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    fed.map_err(io)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
