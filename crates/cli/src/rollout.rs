//! `remora rollout status|pause|resume|undo <policy>`: follow and steer a SidecarPolicy's
//! sidecar rollout from a terminal, as `kubectl rollout` does for Deployments.
//!
//! The edits change the live spec, which GitOps owns: they are JSON merge patches under
//! their own field manager, so the change is attributable, and each says on stderr that the
//! cluster now differs from Git.

mod edit;
mod view;

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use remora_api::SidecarPolicy;
use serde_json::Value;

use crate::{
    cluster::{Cluster, ClusterArgs},
    output::Format,
};
use edit::Undo;
use view::{Outcome, View};

/// The field manager of every edit, as `kubectl-remora` (the plugin name) so that
/// `managedFields` tells these edits from Git's.
const FIELD_MANAGER: &str = "kubectl-remora";

/// How often `--watch` reads the policy: one object, so a poll costs the API server little.
const POLL: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Show the rollout: phase, versions, wave, workloads updated and failed, conditions.
    Status(StatusArgs),
    /// Stop the rollout after the workloads under way (sets spec.rollout.paused).
    Pause(Target),
    /// Let a paused rollout go on (clears spec.rollout.paused).
    Resume(Target),
    /// Set the sidecar version back to the one the rollout replaces
    /// (status.rollout.previousVersion), which rolls that version out.
    Undo(Target),
}

/// The policy a command acts on, and how to reach its cluster.
#[derive(clap::Args)]
struct Target {
    /// The SidecarPolicy's name.
    policy: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Follow the rollout, a line per change, until it is Complete (exit 0), RolledBack or
    /// Failed (exit 1), or --timeout passes (exit 1).
    #[arg(long, short)]
    watch: bool,
    /// How long --watch waits, e.g. 90s, 10m, 1h.
    #[arg(long, default_value = "10m", value_parser = timeout)]
    timeout: Duration,
    /// How to print: a table for people, json or yaml for scripts (with --watch, one
    /// document per change).
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

fn timeout(s: &str) -> Result<Duration, String> {
    remora_api::Duration::from(s).parse()
}

pub fn run(args: &Args) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(act(&args.action)),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remora: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn act(action: &Action) -> Result<(), String> {
    match action {
        Action::Status(args) if args.watch => watch(args).await,
        Action::Status(args) => {
            let policy = Remote::open(&args.target).await?.get().await?;
            let view = View::of(&policy);
            print!("{}", args.output.render(&view, || view.table())?);
            Ok(())
        }
        Action::Pause(target) => set_paused(target, true).await,
        Action::Resume(target) => set_paused(target, false).await,
        Action::Undo(target) => undo(target).await,
    }
}

/// The target policy in its cluster.
struct Remote {
    api: Api<SidecarPolicy>,
    policy: String,
    /// `sidecarpolicy NAMESPACE/NAME`, for messages.
    shown: String,
}

impl Remote {
    async fn open(target: &Target) -> Result<Remote, String> {
        let Cluster {
            client, namespace, ..
        } = target.cluster.connect().await?;
        Ok(Remote {
            shown: format!("sidecarpolicy {namespace}/{}", target.policy),
            api: Api::namespaced(client, &namespace),
            policy: target.policy.clone(),
        })
    }

    async fn get(&self) -> Result<SidecarPolicy, String> {
        self.api.get(&self.policy).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => format!("{} not found", self.shown),
            e => format!("{}: {e}", self.shown),
        })
    }

    /// Sends a merge patch under [`FIELD_MANAGER`], then warns that the spec left Git's.
    async fn patch(&self, body: &Value) -> Result<(), String> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.api
            .patch(&self.policy, &params, &Patch::Merge(body))
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 409 => {
                    format!(
                        "{} changed while this ran; run the command again",
                        self.shown
                    )
                }
                e => format!("{}: {e}", self.shown),
            })?;
        eprintln!(
            "remora: warning: the live spec of {} now differs from Git; Argo CD or Flux will \
             show drift or revert it unless the same change is committed",
            self.shown
        );
        Ok(())
    }
}

/// Prints on each change until the rollout of the current spec ends or the timeout passes.
async fn watch(args: &StatusArgs) -> Result<(), String> {
    let remote = Remote::open(&args.target).await?;
    let deadline = Instant::now() + args.timeout;
    let mut shown = String::new();
    let mut phase = String::from("none reported");
    loop {
        let read = tokio::time::timeout_at(deadline.into(), remote.get()).await;
        let Ok(policy) = read else { break };
        let policy = policy?;
        let view = View::of(&policy);
        let text = match args.output {
            Format::Table => format!("{}\n", view.line()),
            Format::Json => args.output.render(&view, String::new)?,
            // One document per change, so the stream stays YAML.
            Format::Yaml => format!("---\n{}", args.output.render(&view, String::new)?),
        };
        if text != shown {
            print!("{text}");
            shown = text;
        }
        if let Some(r) = view.rollout {
            phase = format!("{:?}", r.phase);
        }
        match view.outcome() {
            Some(Outcome::Complete) => return Ok(()),
            Some(Outcome::RolledBack | Outcome::Failed) => {
                return Err(format!("{}: the rollout ended {phase}", remote.shown));
            }
            None => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(POLL)).await;
    }
    Err(format!(
        "{}: timed out after {} with the rollout {phase}",
        remote.shown,
        humane(args.timeout)
    ))
}

/// A timeout as it was likely written: `10m`, `90s`, `1h`, `1500ms`.
fn humane(d: Duration) -> String {
    match d.as_secs() {
        _ if d.subsec_millis() != 0 || d.is_zero() => format!("{}ms", d.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

async fn set_paused(target: &Target, paused: bool) -> Result<(), String> {
    let remote = Remote::open(target).await?;
    let policy = remote.get().await?;
    let done = if paused { "paused" } else { "resumed" };
    if policy.spec.rollout.paused == paused {
        println!("{}: rollout already {done}", remote.shown);
        return Ok(());
    }
    remote.patch(&edit::paused(paused)).await?;
    println!("{}: rollout {done}", remote.shown);
    Ok(())
}

async fn undo(target: &Target) -> Result<(), String> {
    let remote = Remote::open(target).await?;
    let policy = remote.get().await?;
    let name = &remote.shown;
    match edit::undo(&policy)? {
        Undo::AlreadyThere(version) => {
            println!("{name}: spec.proxy.version is {version} already; nothing to undo");
        }
        Undo::Patch { from, to, body } => {
            remote.patch(&body).await?;
            println!("{name}: spec.proxy.version {from} -> {to}, which rolls {to} out");
            if policy.spec.rollout.paused {
                println!(
                    "{name}: the rollout is paused; `remora rollout resume {}` lets it go",
                    target.policy
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_reads_as_gateway_durations_do_and_prints_as_written() {
        for written in ["10m", "90s", "1h", "250ms", "1500ms"] {
            assert_eq!(timeout(written).map(humane).as_deref(), Ok(written));
        }
        assert!(timeout("ten minutes").is_err());
    }

    #[test]
    fn the_commands_parse_as_operators_type_them() {
        let args: Args = crate::parse_flags(&[
            "status",
            "fleet",
            "-n",
            "demo",
            "--watch",
            "--timeout",
            "2m",
            "-o",
            "json",
        ]);
        let Action::Status(s) = args.action else {
            panic!("status")
        };
        assert_eq!(s.target.policy, "fleet");
        assert_eq!(s.target.cluster.namespace.as_deref(), Some("demo"));
        assert!(s.watch);
        assert_eq!(s.timeout, Duration::from_secs(120));
        assert_eq!(s.output, Format::Json);
        let args: Args = crate::parse_flags(&["undo", "fleet"]);
        assert!(matches!(args.action, Action::Undo(t) if t.policy == "fleet"));
    }
}
