//! How the operator commands reach a cluster: the user's kubeconfig, context and namespace,
//! picked as kubectl picks them, and the API server the only address they dial.

use std::path::PathBuf;

use kube::{
    Client, Config,
    config::{AuthInfo, KubeConfigOptions, Kubeconfig},
};
use secrecy::ExposeSecret;

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

/// A client for the chosen context, the namespace the command works in, and the context's
/// user's bearer token when it has one (a client-certificate or exec-plugin user has none).
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
    pub token: Option<String>,
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
        let token = user_token(&config.auth_info)?;
        let client = Client::try_from(config).map_err(|e| format!("kubeconfig: {e}"))?;
        Ok(Cluster {
            client,
            namespace,
            token,
        })
    }
}

/// The user's `token`, or the content of its `tokenFile`, trimmed.
fn user_token(user: &AuthInfo) -> Result<Option<String>, String> {
    if let Some(token) = &user.token {
        return Ok(Some(token.expose_secret().trim().to_owned()));
    }
    user.token_file
        .as_ref()
        .map(|file| {
            std::fs::read_to_string(file)
                .map(|t| t.trim().to_owned())
                .map_err(|e| format!("the kubeconfig user's tokenFile {file}: {e}"))
        })
        .transpose()
}
