//! From a container of the stored pod spec to a process, as a kubelet would start it: the
//! image's binary, `command`/`args` with Kubernetes' `$(VAR)` expansion, the environment from
//! `value`s and downward-API `fieldRef`s, the user from the securityContext; and the probes
//! a kubelet runs against it.

use std::{
    collections::BTreeMap,
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{Container, Pod, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};
use remora_test_support::expand;

/// The image of the test applications (any tag).
pub const ECHO_IMAGE: &str = "remora.test/echo";
/// The controller's image, the repository the Helm chart uses.
pub const REMORA_IMAGE: &str = "ghcr.io/remora-mesh/remora";
/// The proxy image the SidecarPolicy's CRD defaults to.
pub const PROXY_IMAGE: &str = "envoyproxy/envoy";

/// What a container's image runs: the local binary for an image, found by the exact image
/// or by its repository (the image without its tag).
#[derive(Clone, Default)]
pub struct Images(BTreeMap<String, PathBuf>);

impl Images {
    /// The proxy image as `$ENVOY_BIN`, the remora image as the workspace's built `remora`
    /// (`cargo build -p remora`), the echo image as `remora-echo`.
    pub fn standard() -> Images {
        Images::default()
            .with(PROXY_IMAGE, super::super::envoy_bin())
            .with(REMORA_IMAGE, remora_bin())
            .with(ECHO_IMAGE, env!("CARGO_BIN_EXE_remora-echo").into())
    }

    pub fn with(mut self, image: &str, binary: PathBuf) -> Images {
        self.0.insert(image.into(), binary);
        self
    }

    pub fn binary(&self, image: &str) -> Result<&Path, String> {
        let repository = match image.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => repo,
            _ => image,
        };
        let found = self.0.get(image).or_else(|| self.0.get(repository));
        let path = found.ok_or_else(|| format!("no local binary for image {image:?}"))?;
        if !path.exists() {
            return Err(format!("image {image:?}: no binary at {}", path.display()));
        }
        Ok(path)
    }
}

/// The `remora` binary next to this test's own build (`target/<profile>/remora`); a test
/// cannot build it (cargo holds the build lock while tests run).
pub fn remora_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test>-<hash>
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    profile.join("remora")
}

/// A container resolved to a process.
#[derive(Clone, Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `(uid, gid)` from the securityContext (the container's over the pod's).
    pub user: Option<(i64, i64)>,
}

/// How `container` of `pod` (whose address is `pod_ip`) starts. The image's binary replaces
/// the entrypoint: `command[0]`, when given, names that binary inside the image.
pub fn launch(pod: &Pod, c: &Container, pod_ip: &str, images: &Images) -> Result<Launch, String> {
    let image = c.image.as_deref().unwrap_or_default();
    let program = images.binary(image)?.to_owned();
    let env = environment(pod, c, pod_ip)?;
    let vars: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let command = c.command.iter().flatten().skip(1);
    let args = command
        .chain(c.args.iter().flatten())
        .map(|a| expand(a, &vars))
        .collect();
    Ok(Launch {
        program,
        args,
        env,
        user: user(pod, c)?,
    })
}

fn user(pod: &Pod, c: &Container) -> Result<Option<(i64, i64)>, String> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group));
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or(pod_sc.and_then(|s| s.run_as_non_root));
    if non_root == Some(true) && uid.unwrap_or(0) == 0 {
        return Err(format!(
            "container {}: runAsNonRoot without a non-zero runAsUser",
            c.name
        ));
    }
    // A runtime gives an unknown user group 0 unless runAsGroup says otherwise.
    Ok((uid.is_some() || gid.is_some()).then(|| (uid.unwrap_or(0), gid.unwrap_or(0))))
}

/// The container's variables in order, each `value` expanded against those before it.
fn environment(pod: &Pod, c: &Container, pod_ip: &str) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
        ),
        (
            "HOSTNAME".into(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
    ];
    for var in c.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                let field = from.field_ref.as_ref().ok_or_else(|| {
                    format!(
                        "{}: env {}: only fieldRef sources run here",
                        c.name, var.name
                    )
                })?;
                field_value(pod, &field.field_path, pod_ip)?
            }
            (Some(value), None) => {
                let vars: BTreeMap<&str, &str> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                expand(value, &vars)
            }
            (None, None) => String::new(),
        };
        env.retain(|(k, _)| *k != var.name);
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

/// A downward-API field of the pod.
fn field_value(pod: &Pod, path: &str, pod_ip: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(pod_ip.into()),
        "status.hostIP" | "status.hostIPs" => Some("127.0.0.1".into()),
        _ => keyed("metadata.labels['", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations['", meta.annotations.as_ref())),
    };
    value.ok_or_else(|| format!("downward-API field {path:?} is not supported here"))
}

/// `ip netns exec <netns> [mounts…] [setpriv …] <program> <args>` with only `launch`'s
/// environment, its output appended to `log`.
pub fn command(
    netns: &str,
    program: &Path,
    launch: &Launch,
    log: &File,
    mounts: &[super::volumes::Mount],
) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]);
    if !mounts.is_empty() {
        cmd.args(super::volumes::wrap(mounts));
    }
    if let Some((uid, gid)) = launch.user {
        cmd.arg("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups");
    }
    cmd.arg(program)
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null());
    if let (Ok(out), Ok(err)) = (log.try_clone(), log.try_clone()) {
        cmd.stdout(out).stderr(err);
    }
    cmd
}

/// One run of a probe (or of a hook's network action): `httpGet` on the pod address (2xx
/// and 3xx pass), `tcpSocket` (a connection passes); exec and gRPC probes are not run here
/// and fail.
pub async fn probe(p: &Probe, c: &Container, pod_ip: &str) -> bool {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(get) = &p.http_get {
        let Some(addr) = address(get.host.as_deref(), &get.port, c, pod_ip) else {
            return false;
        };
        let path = get.path.as_deref().unwrap_or("/");
        let headers: Vec<(&str, &str)> = get
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        let host = addr.to_string();
        let reply = tokio::time::timeout(timeout, super::super::get(addr, &host, path, &headers));
        return matches!(reply.await, Ok(Ok(r)) if (200..400).contains(&r.status));
    }
    if let Some(tcp) = &p.tcp_socket {
        let Some(addr) = address(tcp.host.as_deref(), &tcp.port, c, pod_ip) else {
            return false;
        };
        let connect = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr));
        return matches!(connect.await, Ok(Ok(_)));
    }
    false
}

/// A probe's target: its host (the pod address by default) and its port, by number or by
/// the name of one of the container's ports.
fn address(
    host: Option<&str>,
    port: &IntOrString,
    c: &Container,
    pod_ip: &str,
) -> Option<SocketAddr> {
    let port = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))?
                .container_port
        }
    };
    let host = host.filter(|h| !h.is_empty()).unwrap_or(pod_ip);
    Some(SocketAddr::new(
        host.parse().ok()?,
        u16::try_from(port).ok()?,
    ))
}
