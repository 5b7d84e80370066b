//! The volumes a pod's containers mount, made as a kubelet makes them: an `emptyDir` is a
//! folder of the pod's own, a `secret` its keys as files, a projected ServiceAccount token
//! comes from the TokenRequest API
//! bound to the pod (audience and lifetime as the spec asks; tests end long before the
//! kubelet would refresh it). A container sees its mounts at their `mountPath`s through bind
//! mounts in its own mount namespace (`ip netns exec` makes one per process), under a fresh
//! tmpfs on `/run`, so nothing appears on the host. Mount paths elsewhere, and other kinds of
//! volume, are refused with the reason rather than silently skipped.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{Container, Pod, Secret, ServiceAccount, Volume},
};
use kube::{Api, Client, ResourceExt, api::PostParams};

/// Where the runner mounts volumes: a fresh tmpfs in each container's mount namespace.
const MOUNT_ROOTS: [&str; 2] = ["/run/", "/var/run/"];

/// The pod's volumes, each a folder of the runner's.
#[derive(Debug, Default)]
pub struct Volumes(BTreeMap<String, PathBuf>);

/// A bind mount: the folder of the runner's, and where the container sees it.
pub type Mount = (PathBuf, String);

impl Volumes {
    /// Makes every volume of `pod` that a container mounts, under `dir`.
    pub async fn make(client: &Client, pod: &Pod, dir: &Path) -> Result<Volumes, String> {
        let spec = pod.spec.as_ref().ok_or("a pod without a spec")?;
        let mounted: Vec<&str> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .map(|m| m.name.as_str())
            .collect();
        let mut made = BTreeMap::new();
        for v in spec.volumes.iter().flatten() {
            if !mounted.contains(&v.name.as_str()) {
                continue;
            }
            let folder = dir.join(&v.name);
            fs::create_dir_all(&folder).map_err(|e| format!("volume {}: {e}", v.name))?;
            make_one(client, pod, v, &folder).await?;
            made.insert(v.name.clone(), folder);
        }
        Ok(Volumes(made))
    }

    /// The bind mounts container `c` needs.
    pub fn mounts(&self, c: &Container) -> Result<Vec<Mount>, String> {
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                if !MOUNT_ROOTS.iter().any(|r| m.mount_path.starts_with(r)) {
                    return Err(format!(
                        "{}: mountPath {} is outside /run, where the runner mounts volumes",
                        c.name, m.mount_path
                    ));
                }
                let folder = self
                    .0
                    .get(&m.name)
                    .ok_or_else(|| format!("{}: volume {} was not made", c.name, m.name))?;
                Ok((folder.clone(), m.mount_path.clone()))
            })
            .collect()
    }
}

async fn make_one(client: &Client, pod: &Pod, v: &Volume, folder: &Path) -> Result<(), String> {
    if v.empty_dir.is_some() {
        // Any container's user may write there, as in an emptyDir.
        return set_mode(folder, 0o777);
    }
    if let Some(secret) = &v.secret {
        // The API server's ServiceAccount admission mounts the legacy token Secret into
        // every container of a 1.20 cluster.
        let name = secret.secret_name.as_deref().unwrap_or_default();
        return write_secret(client, pod, name, folder).await;
    }
    let sources = v.projected.as_ref().and_then(|p| p.sources.as_ref());
    let tokens: Vec<_> = sources
        .into_iter()
        .flatten()
        .filter_map(|s| s.service_account_token.as_ref())
        .collect();
    if tokens.is_empty() || sources.is_some_and(|s| s.len() != tokens.len()) {
        return Err(format!(
            "volume {}: only emptyDir, secret and projected serviceAccountToken volumes run here",
            v.name
        ));
    }
    set_mode(folder, 0o755)?;
    for t in tokens {
        let token = request_token(client, pod, t.audience.clone(), t.expiration_seconds).await?;
        let file = folder.join(&t.path);
        fs::write(&file, token).map_err(|e| format!("volume {}: {e}", v.name))?;
        set_mode(&file, 0o644)?;
    }
    Ok(())
}

/// Every key of Secret `name` in the pod's namespace as a file of `folder`.
async fn write_secret(client: &Client, pod: &Pod, name: &str, folder: &Path) -> Result<(), String> {
    let secrets: Api<Secret> =
        Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let secret = secrets
        .get(name)
        .await
        .map_err(|e| format!("Secret {name}: {e}"))?;
    set_mode(folder, 0o755)?;
    for (key, value) in secret.data.unwrap_or_default() {
        let file = folder.join(&key);
        fs::write(&file, value.0).map_err(|e| format!("Secret {name}: {e}"))?;
        set_mode(&file, 0o644)?;
    }
    Ok(())
}

/// A token for the pod's service account, bound to the pod, as the kubelet asks for one.
async fn request_token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    seconds: Option<i64>,
) -> Result<String, String> {
    let namespace = pod.namespace().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audience.into_iter().collect()),
            expiration_seconds: seconds,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let answer = accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("a token for {namespace}/{account}: {e}"))?;
    answer
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| format!("the token request for {namespace}/{account} has no status"))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// The shell words that, run first in the container's mount namespace, put a tmpfs on
/// `/run` and the `mounts` in it, then `exec` the rest of the command line.
pub fn wrap(mounts: &[Mount]) -> Vec<String> {
    let script = "mount -t tmpfs -o mode=755 remora-run /run || exit 1; \
                  while [ \"$1\" != -- ]; do \
                  mkdir -p \"$2\" && mount --bind \"$1\" \"$2\" || exit 1; shift 2; done; \
                  shift; exec \"$@\"";
    let mut words = vec!["sh".into(), "-c".into(), script.into(), "sh".into()];
    for (folder, path) in mounts {
        words.push(folder.display().to_string());
        words.push(path.clone());
    }
    words.push("--".into());
    words
}
