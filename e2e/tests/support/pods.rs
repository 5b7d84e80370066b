//! A kubelet that really runs the pods of one namespace on the stub cluster, from the exact
//! spec the API server holds (after the mutating webhook): each pod in its own network
//! namespace on a bridge the test made (`net`), its init containers in order (a native
//! sidecar keeps running and the next starts once its startup probe passes), then its
//! containers (a postStart exec hook runs to its end before the next one starts), each a
//! process from the image's local binary (`container`). Readiness comes from the readiness
//! probes run against what runs, and is reported through the status subresource.
//!
//! Volumes (`volumes`): `emptyDir`, `secret` and projected ServiceAccount tokens, mounted under
//! `/run`; otherwise containers see the host's files.
//!
//! Not done here: other volumes, restarts of exited containers, exec/gRPC probes, liveness
//! probes, resource limits, capabilities.
//!
//! Every loop is bounded; everything a pod made is removed when the pod is deleted, when the
//! runner is dropped, and when a test panics (the containers' log tails are printed then).

pub mod container;
pub mod net;
pub mod volumes;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Child,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};

use container::Images;
use k8s_openapi::api::core::v1::{Container, Pod, Service};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams},
};
use net::{Bridge, Sandbox, hosts_file};
use status::Status;
use tokio::task::JoinHandle;

mod status;

/// How long a terminated container may take to exit before it is killed.
const GRACE: Duration = Duration::from_secs(5);
/// The longest an init container, a startup probe or a postStart hook may take.
const START_LIMIT: Duration = Duration::from_secs(120);

/// Runs the pods of a namespace until dropped; then stops them and removes what they made.
pub struct Runner {
    task: JoinHandle<()>,
    ctx: Arc<Ctx>,
}

struct Ctx {
    client: Client,
    pods: Api<Pod>,
    services: Api<Service>,
    /// The test owns the bridge: it goes when the test drops it, whatever tasks still hold.
    bridge: Weak<Bridge>,
    images: Images,
    /// Logs and the staged binaries.
    dir: tempfile::TempDir,
    running: Mutex<BTreeMap<String, PodRun>>,
    failures: Mutex<Vec<String>>,
}

/// A pod being run: its task and what it made.
struct PodRun {
    name: String,
    task: JoinHandle<()>,
    made: Arc<Mutex<Made>>,
}

/// What a pod made, for teardown.
#[derive(Default)]
struct Made {
    sandbox: Option<Sandbox>,
    volumes: volumes::Volumes,
    procs: Vec<(String, Child)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Runner {
    /// Starts running the pods of `namespace` on `bridge` (binding them to the stub node as
    /// they appear), with the binaries `images` names.
    pub fn start(client: &Client, namespace: &str, bridge: &Arc<Bridge>, images: Images) -> Runner {
        let dir = tempfile::tempdir().expect("temp dir");
        // Containers running as another user reach their staged binary through it.
        set_mode(dir.path(), 0o755);
        fs::create_dir(dir.path().join("bin")).expect("bin dir");
        set_mode(&dir.path().join("bin"), 0o755);
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            pods: Api::namespaced(client.clone(), namespace),
            services: Api::all(client.clone()),
            bridge: Arc::downgrade(bridge),
            images,
            dir,
            running: Mutex::default(),
            failures: Mutex::default(),
        });
        let task = tokio::spawn(tend_loop(ctx.clone()));
        Runner { task, ctx }
    }

    /// What went wrong starting pods (a missing binary, a failed init container, …).
    pub fn failures(&self) -> Vec<String> {
        lock(&self.ctx.failures).clone()
    }

    /// The network namespace of the running pod `name`.
    pub fn netns(&self, name: &str) -> Option<String> {
        let running = lock(&self.ctx.running);
        let run = running.values().find(|r| r.name == name)?;
        lock(&run.made).sandbox.as_ref().map(|s| s.netns.clone())
    }

    /// How many pods run now.
    pub fn running(&self) -> usize {
        lock(&self.ctx.running).len()
    }

    /// The output of container `container` of pod `pod` so far.
    pub fn log(&self, pod: &str, container: &str) -> String {
        fs::read_to_string(self.ctx.log_path(pod, container)).unwrap_or_default()
    }

    fn print_tails(&self) {
        for f in lock(&self.ctx.failures).iter() {
            eprintln!("pod runner: {f}");
        }
        let Ok(entries) = fs::read_dir(self.ctx.dir.path()) else {
            return;
        };
        for entry in entries
            .flatten()
            .filter(|e| e.path().extension() == Some("log".as_ref()))
        {
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<_> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!(
                "---- {} (last 40 lines) ----\n{tail}",
                entry.file_name().display()
            );
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.task.abort();
        if std::thread::panicking() {
            self.print_tails();
        }
        let runs = std::mem::take(&mut *lock(&self.ctx.running));
        for run in runs.into_values() {
            run.task.abort();
            teardown(&mut lock(&run.made));
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Lists the namespace's pods every 100 ms, for at most ten minutes.
async fn tend_loop(ctx: Arc<Ctx>) {
    for _ in 0..6000 {
        if let Ok(list) = ctx.pods.list(&ListParams::default()).await {
            tend(&ctx, list.items).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tend(ctx: &Arc<Ctx>, pods: Vec<Pod>) {
    let mut seen = BTreeSet::new();
    for pod in pods {
        let (uid, name) = (pod.uid().unwrap_or_default(), pod.name_any());
        seen.insert(uid.clone());
        if pod.metadata.deletion_timestamp.is_some() {
            // A kubelet stops the containers, then the pod is gone for good.
            stop(ctx, &uid).await;
            let _ = ctx
                .pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_ref());
        if bound.is_none() {
            super::kubelet::bind(&ctx.pods, &name).await;
            continue;
        }
        if let std::collections::btree_map::Entry::Vacant(slot) = lock(&ctx.running).entry(uid) {
            let made = Arc::new(Mutex::new(Made::default()));
            let task = tokio::spawn(run_pod(ctx.clone(), pod, made.clone()));
            slot.insert(PodRun { name, task, made });
        }
    }
    let gone: Vec<String> = lock(&ctx.running)
        .keys()
        .filter(|uid| !seen.contains(*uid))
        .cloned()
        .collect();
    for uid in gone {
        stop(ctx, &uid).await;
    }
}

/// Stops a pod's task, then its processes, and removes its namespace.
async fn stop(ctx: &Ctx, uid: &str) {
    let Some(run) = lock(&ctx.running).remove(uid) else {
        return;
    };
    run.task.abort();
    let made = run.made;
    let _ = tokio::task::spawn_blocking(move || teardown(&mut lock(&made))).await;
}

/// SIGTERM to every process of the pod (those in its namespace too), at most [`GRACE`] to
/// exit, then SIGKILL; then the namespace, veth and hosts file go.
fn teardown(made: &mut Made) {
    let netns = made.sandbox.as_ref().map(|s| s.netns.clone());
    for signal in ["-TERM", "-KILL"] {
        let pids = alive(made, netns.as_deref());
        if pids.is_empty() {
            break;
        }
        let _ = std::process::Command::new("kill")
            .arg(signal)
            .args(pids.iter().map(u32::to_string))
            .stderr(std::process::Stdio::null())
            .status();
        for _ in 0..GRACE.as_millis() / 50 {
            if alive(made, netns.as_deref()).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for (_, child) in &mut made.procs {
        let _ = child.kill();
        let _ = child.wait();
    }
    made.procs.clear();
    if let Some(mut sandbox) = made.sandbox.take() {
        sandbox.remove();
    }
}

/// The pids of the pod's processes still running: our children and whatever else is in
/// its namespace.
fn alive(made: &mut Made, netns: Option<&str>) -> BTreeSet<u32> {
    let mut pids: BTreeSet<u32> = made
        .procs
        .iter_mut()
        .filter_map(|(_, c)| matches!(c.try_wait(), Ok(None)).then(|| c.id()))
        .collect();
    if let Some(ns) = netns {
        let listed = net::ip(&["netns", "pids", ns]).unwrap_or_default();
        pids.extend(listed.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    pids
}

impl Ctx {
    fn log_path(&self, pod: &str, container: &str) -> PathBuf {
        self.dir.path().join(format!("{pod}_{container}.log"))
    }

    fn fail(&self, what: String) {
        eprintln!("pod runner: {what}");
        lock(&self.failures).push(what);
    }

    /// Every Service with a ClusterIP, as `(namespace, name, ip)`.
    async fn cluster_ips(&self) -> Vec<(String, String, String)> {
        let list = self.services.list(&ListParams::default()).await;
        let services = list.map(|l| l.items).unwrap_or_default();
        services
            .into_iter()
            .filter_map(|s| {
                let ip = s.spec.as_ref()?.cluster_ip.clone()?;
                let ns = s.metadata.namespace.clone()?;
                (!ip.is_empty() && ip != "None").then(|| (ns, s.name_any(), ip))
            })
            .collect()
    }

    /// Hard-links `binary` where any user may run it (a copy across file systems).
    fn stage(&self, binary: &Path) -> Result<PathBuf, String> {
        let real = fs::canonicalize(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
        let flat = real.to_string_lossy().replace('/', "_");
        let staged = self.dir.path().join("bin").join(flat);
        if !staged.exists() && fs::hard_link(&real, &staged).is_err() {
            fs::copy(&real, &staged).map_err(|e| format!("staging {}: {e}", real.display()))?;
        }
        Ok(staged)
    }

    /// Starts `c` in the pod's namespace; its output goes to its log file.
    fn spawn(&self, pod: &Pod, c: &Container, made: &Mutex<Made>) -> Result<(), String> {
        let (netns, ip) = {
            let m = lock(made);
            let s = m.sandbox.as_ref().ok_or("no sandbox")?;
            (s.netns.clone(), s.ip.to_string())
        };
        let launch = container::launch(pod, c, &ip, &self.images)?;
        let program = self.stage(&launch.program)?;
        let mounts = lock(made).volumes.mounts(c)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(&pod.name_any(), &c.name))
            .map_err(|e| format!("log file: {e}"))?;
        let child = container::command(&netns, &program, &launch, &log, &mounts)
            .spawn()
            .map_err(|e| format!("container {}: {e}", c.name))?;
        lock(made).procs.push((c.name.clone(), child));
        Ok(())
    }

    /// Runs a container's postStart exec hook to its end in the pod's namespace, as the
    /// container's user; the kubelet starts the next container only after it.
    async fn post_start(&self, pod: &Pod, c: &Container, made: &Mutex<Made>) -> Result<(), String> {
        let exec = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref());
        let Some(command) = exec.and_then(|h| h.exec.as_ref()?.command.clone()) else {
            return Ok(());
        };
        let (program, args) = command.split_first().ok_or("an empty postStart command")?;
        let (netns, ip) = {
            let m = lock(made);
            let s = m.sandbox.as_ref().ok_or("no sandbox")?;
            (s.netns.clone(), s.ip.to_string())
        };
        let mut launch = container::launch(pod, c, &ip, &self.images)?;
        launch.args = args.to_vec();
        let mounts = lock(made).volumes.mounts(c)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(&pod.name_any(), &format!("{}.postStart", c.name)))
            .map_err(|e| format!("log file: {e}"))?;
        let mut child = container::command(&netns, Path::new(program), &launch, &log, &mounts)
            .spawn()
            .map_err(|e| format!("postStart of {}: {e}", c.name))?;
        let code = wait_exit(&mut child, START_LIMIT).await;
        match code {
            Some(0) => Ok(()),
            other => Err(format!("postStart of {} ended with {other:?}", c.name)),
        }
    }
}

/// Waits for `child` to exit, at most `limit` (then kills it); its exit code.
async fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    for _ in 0..limit.as_millis() / 100 {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// One pod from its sandbox to the end of the runner: starts it, then keeps its status.
async fn run_pod(ctx: Arc<Ctx>, pod: Pod, made: Arc<Mutex<Made>>) {
    let name = pod.name_any();
    let mut status = Status::new(&pod);
    if let Err(e) = start_pod(&ctx, &pod, &made, &mut status).await {
        ctx.fail(format!(
            "{}/{name}: {e}",
            pod.namespace().unwrap_or_default()
        ));
        status.refresh(&mut lock(&made).procs);
        status.publish(&ctx.pods, &name).await;
        return;
    }
    // Probes at their periods, for at most ten minutes (the runner's own bound).
    for _ in 0..6000 {
        status.refresh(&mut lock(&made).procs);
        status.probe().await;
        status.publish(&ctx.pods, &name).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_pod(
    ctx: &Ctx,
    pod: &Pod,
    made: &Mutex<Made>,
    status: &mut Status,
) -> Result<(), String> {
    let (name, ns) = (pod.name_any(), pod.namespace().unwrap_or_default());
    let services = ctx.cluster_ips().await;
    let uid = pod.uid().unwrap_or_default();
    let bridge = ctx.bridge.upgrade().ok_or("the bridge is gone")?;
    let sandbox = Sandbox::create(&bridge, &uid, |ip| hosts_file(ip, &name, &ns, &services))?;
    drop(bridge);
    status.pod_ip = sandbox.ip.to_string();
    // As containerd (2.0 on) and Docker set up a sandbox: any user may bind any port, which
    // the proxy (uid 101, no capabilities) needs for listeners on ports below 1024.
    sandbox.sysctl("net.ipv4.ip_unprivileged_port_start", "0")?;
    let sysctls = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref()?.sysctls.as_ref());
    for s in sysctls.into_iter().flatten() {
        sandbox.sysctl(&s.name, &s.value)?;
    }
    lock(made).sandbox = Some(sandbox);
    let folder = ctx.dir.path().join("volumes").join(&uid);
    lock(made).volumes = volumes::Volumes::make(&ctx.client, pod, &folder).await?;
    status.publish(&ctx.pods, &name).await;
    let spec = pod.spec.as_ref().ok_or("a pod without a spec")?;
    for c in spec.init_containers.iter().flatten() {
        ctx.spawn(pod, c, made)?;
        status.started(&c.name);
        if c.restart_policy.as_deref() == Some("Always") {
            status.startup(c, made).await?;
            continue;
        }
        let code = init_exit(made, &c.name).await;
        status.refresh(&mut lock(made).procs);
        if code != Some(0) {
            return Err(format!("init container {} ended with {code:?}", c.name));
        }
        status.publish(&ctx.pods, &name).await;
    }
    status.initialized = true;
    for c in &spec.containers {
        ctx.spawn(pod, c, made)?;
        status.started(&c.name);
        status.publish(&ctx.pods, &name).await;
        ctx.post_start(pod, c, made).await?;
    }
    Ok(())
}

/// Waits for the init container `name` to exit, at most [`START_LIMIT`] (then kills it).
async fn init_exit(made: &Mutex<Made>, name: &str) -> Option<i32> {
    for _ in 0..START_LIMIT.as_millis() / 100 {
        let exited = {
            let mut m = lock(made);
            let (_, child) = m.procs.iter_mut().rev().find(|(n, _)| n == name)?;
            child.try_wait()
        };
        if let Ok(Some(status)) = exited {
            return status.code();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut m = lock(made);
    let (_, child) = m.procs.iter_mut().rev().find(|(n, _)| n == name)?;
    let _ = child.kill();
    None
}
