//! How the operator commands reach a cluster: the user's kubeconfig, context and namespace,
//! picked as kubectl picks them, and the API server the only address they dial.

use std::path::PathBuf;

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

/// The flags kubectl users know, for every command that talks to a cluster.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClusterArgs {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// The namespace (default: the context's, else `default`).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

/// A client for the chosen context, and the namespace the command works in.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

impl ClusterArgs {
    /// Connects as kubectl would: the same file, context and default namespace.
    pub async fn connect(&self) -> Result<Cluster, String> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
                Config::from_custom_kubeconfig(file, &options).await
            }
            None => Config::from_kubeconfig(&options).await,
        }
        .map_err(|e| match &self.context {
            Some(c) => format!("kubeconfig context {c:?}: {e}"),
            None => format!("kubeconfig: {e} (set KUBECONFIG or --kubeconfig)"),
        })?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| format!("kubeconfig: {e}"))?;
        Ok(Cluster { client, namespace })
    }
}
