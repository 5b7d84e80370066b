//! The network of pods that run for real: a Linux bridge the test owns in the root namespace
//! (`10.253.<index>.1/24`), and per pod a network namespace joined to it by a veth pair, with
//! its own `/etc/hosts`. Nothing routes beyond the bridge: traffic stays on loopback and on
//! these addresses. Every name carries the bridge's index, so what a killed run left behind
//! is found and removed when the index is claimed again.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU8, Ordering},
};

/// The dedicated range: bridge `index` holds `10.253.<index>.0/24`.
const RANGE: [u8; 2] = [10, 253];
/// Pods get `.10` up to `.254` of their bridge's /24.
const FIRST_POD: u8 = 10;
/// Marks a bridge as ours, followed by the owning process id.
const ALIAS: &str = "remora-e2e pid";

/// Runs `ip` with `args`; the error is its stderr.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The names of the existing network namespaces.
pub fn netns_list() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The names of the existing links (`veth@peer` shown as `veth`).
pub fn link_list() -> Vec<String> {
    ip(&["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// A bridge in the root namespace, removed on drop (with whatever is still attached).
pub struct Bridge {
    pub name: String,
    pub index: u8,
    next: AtomicU8,
}

impl Bridge {
    /// Claims the first free index (one a dead process left is cleaned and reused) and brings
    /// the bridge up with its gateway address.
    pub fn create() -> Bridge {
        for index in 0..=254u8 {
            let name = format!("rmr-br{index}");
            if ip(&["link", "add", "name", &name, "type", "bridge"]).is_err() {
                if !owner_is_dead(&name) {
                    continue;
                }
                remove_index(index);
                if ip(&["link", "add", "name", &name, "type", "bridge"]).is_err() {
                    continue;
                }
            }
            let bridge = Bridge {
                name,
                index,
                next: AtomicU8::new(FIRST_POD),
            };
            let alias = format!("{ALIAS} {}", std::process::id());
            let cidr = format!("{}/24", bridge.gateway());
            for args in [
                vec!["link", "set", "dev", &bridge.name, "alias", &alias],
                vec!["addr", "add", &cidr, "dev", &bridge.name],
                vec!["link", "set", "dev", &bridge.name, "up"],
            ] {
                ip(&args).unwrap_or_else(|e| panic!("cannot set the bridge up: {e}"));
            }
            return bridge;
        }
        panic!("no free bridge index in 10.253.0.0/16 (ip link show type bridge)");
    }

    /// The bridge's own address: the pods' gateway, where the test serves what pods reach.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(RANGE[0], RANGE[1], self.index, 1)
    }

    pub fn address(&self) -> IpAddr {
        IpAddr::V4(self.gateway())
    }

    fn next_pod_ip(&self) -> Result<(u8, Ipv4Addr), String> {
        let host = self.next.fetch_add(1, Ordering::Relaxed);
        if !(FIRST_POD..255).contains(&host) {
            return Err(format!("bridge {} has no pod address left", self.name));
        }
        Ok((host, Ipv4Addr::new(RANGE[0], RANGE[1], self.index, host)))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        remove_index(self.index);
    }
}

/// Whether the bridge `name` exists, is ours, and its process is gone.
fn owner_is_dead(name: &str) -> bool {
    let Ok(shown) = ip(&["-d", "link", "show", "dev", name]) else {
        return false;
    };
    let Some(pid) = shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("alias ")?.strip_prefix(ALIAS))
        .map(str::trim)
    else {
        return false;
    };
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the bridge of `index` with its pods' veths and namespaces.
fn remove_index(index: u8) {
    let prefix = format!("remora-pod-{index}-");
    for ns in netns_list().iter().filter(|n| n.starts_with(&prefix)) {
        let _ = ip(&["netns", "delete", ns]);
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
    }
    let veth = format!("rmr{index}p");
    for link in link_list().iter().filter(|l| l.starts_with(&veth)) {
        let _ = ip(&["link", "delete", link]);
    }
    let _ = ip(&["link", "delete", &format!("rmr-br{index}")]);
}

/// The stub cluster's Service range, from its `cluster.env` (`e2e/cluster/with-cluster`).
fn service_cidr() -> Result<String, String> {
    std::env::var("REMORA_SERVICE_CIDR").map_err(|_| {
        "REMORA_SERVICE_CIDR is not set: run the test under e2e/cluster/with-cluster".into()
    })
}

/// One pod's network namespace, veth and hosts file; removed by [`Sandbox::remove`] or drop.
pub struct Sandbox {
    pub netns: String,
    pub veth: String,
    pub ip: Ipv4Addr,
    etc: PathBuf,
    created: bool,
}

impl Sandbox {
    /// A namespace named after the pod's uid, its veth on `bridge`, `lo` up, the pod address,
    /// and the cluster's Service range on-link (so a connection to a ClusterIP is made, for
    /// the pod's capture rules to redirect); no default route, so nothing the rules miss
    /// leaves the bridge. `hosts` (given the pod address) becomes its `/etc/hosts`.
    pub fn create(
        bridge: &Bridge,
        uid: &str,
        hosts: impl FnOnce(Ipv4Addr) -> String,
    ) -> Result<Sandbox, String> {
        let (host, pod_ip) = bridge.next_pod_ip()?;
        let netns = format!("remora-pod-{}-{}", bridge.index, &uid[..uid.len().min(8)]);
        let mut sandbox = Sandbox {
            etc: PathBuf::from(format!("/etc/netns/{netns}")),
            veth: format!("rmr{}p{host}", bridge.index),
            netns,
            ip: pod_ip,
            created: true,
        };
        sandbox
            .plumb(bridge, &hosts(pod_ip))
            .inspect_err(|_| sandbox.remove())?;
        Ok(sandbox)
    }

    fn plumb(&self, bridge: &Bridge, hosts: &str) -> Result<(), String> {
        let (ns, veth) = (self.netns.as_str(), self.veth.as_str());
        let cidr = format!("{}/24", self.ip);
        ip(&["netns", "add", ns])?;
        ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["link", "set", "dev", veth, "master", &bridge.name, "up"])?;
        ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
        ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "dev", "eth0", "up"])?;
        ip(&["-n", ns, "route", "add", &service_cidr()?, "dev", "eth0"])?;
        std::fs::create_dir_all(&self.etc)
            .and_then(|()| std::fs::write(self.etc.join("hosts"), hosts))
            .map_err(|e| format!("{}: {e}", self.etc.display()))
    }

    /// Sets a sysctl of the pod's network namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        let setting = format!("{key}={value}");
        ip(&["netns", "exec", &self.netns, "sysctl", "-qw", &setting]).map(drop)
    }

    /// Deletes the namespace, the veth pair and the hosts file; safe to call again.
    pub fn remove(&mut self) {
        if !std::mem::take(&mut self.created) {
            return;
        }
        let _ = ip(&["link", "delete", &self.veth]);
        let _ = ip(&["netns", "delete", &self.netns]);
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The `/etc/hosts` of a pod: itself, and every Service by the names cluster DNS answers
/// (`name` only for its own namespace, which is first in a pod's search path).
pub fn hosts_file(
    pod_ip: Ipv4Addr,
    pod_name: &str,
    pod_ns: &str,
    services: &[(String, String, String)],
) -> String {
    let mut text = format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n{pod_ip}\t{pod_name}\n");
    for (ns, name, cluster_ip) in services {
        let short = if ns == pod_ns {
            format!("{name} ")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "{cluster_ip}\t{short}{name}.{ns} {name}.{ns}.svc {name}.{ns}.svc.cluster.local\n"
        ));
    }
    text
}
