//! `remora compute`: the model run once over a folder, printed for people.

mod access;

use std::{fmt::Write as _, path::Path, process::ExitCode};

use remora_api::ValidationSettings;
use remora_inputs::load_dir;
use remora_model::{
    Mesh,
    config::{
        Accepts, BindAddress, Discovery, Listener, ListenerProtocol, PathMatch, ProxyConfig,
        Resource, Route, RouteAction, Target, Unmatched, ValueMatch, WeightedCluster,
    },
    input::{Event, MeshSettings, ObjectKey},
};

pub fn run(dir: &Path, proxy: Option<&str>, validation: ValidationSettings) -> ExitCode {
    match report(dir, proxy, validation) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("remora compute: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the folder, computes the mesh and renders it: proxies first, then every problem.
fn report(
    dir: &Path,
    proxy: Option<&str>,
    validation: ValidationSettings,
) -> Result<String, String> {
    let loaded = load_dir(dir).map_err(|e| e.to_string())?;
    let mut mesh = Mesh::new(MeshSettings {
        validation,
        ..MeshSettings::default()
    });
    mesh.apply(loaded.objects.into_iter().map(Event::Upsert));

    let wanted = match proxy {
        Some(p) => {
            let (ns, name) = p
                .split_once('/')
                .ok_or_else(|| format!("--proxy {p:?}: write NAMESPACE/POD"))?;
            let key = ObjectKey::new(ns, name);
            if mesh.proxy_config(&key).is_none() {
                return Err(format!("no proxy {key} in {}", dir.display()));
            }
            vec![key]
        }
        None => mesh.proxies().cloned().collect(),
    };

    let mut out = String::new();
    for key in &wanted {
        let config = mesh.proxy_config(key).unwrap_or_default();
        let policy = mesh
            .proxy_policy(key)
            .map_or("no policy, mesh defaults".to_owned(), |p| {
                format!("policy {p}")
            });
        let _ = writeln!(out, "proxy {key} ({policy})");
        render(&config, &mut out);
        if let Some(authz) = mesh.proxy_authorization(key) {
            access::render(&authz, &mut out);
        }
        out.push('\n');
    }
    if wanted.is_empty() {
        let _ = writeln!(
            out,
            "no proxies: no pod in {} has a {} container",
            dir.display(),
            remora_inputs::PROXY_CONTAINER
        );
    }

    let mut problems: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
    problems.extend(mesh.problems().iter().map(ToString::to_string));
    if !loaded.warnings.is_empty() {
        let _ = writeln!(out, "warnings ({})", loaded.warnings.len());
        for w in &loaded.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    if problems.is_empty() {
        out.push_str("no problems\n");
    } else {
        let _ = writeln!(out, "problems ({})", problems.len());
        for p in problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    Ok(out)
}

fn render(config: &ProxyConfig, out: &mut String) {
    for resource in config.resources.values() {
        match resource {
            Resource::Listener(l) => listener(&l.value, out),
            Resource::RouteConfig(rc) => {
                let _ = writeln!(out, "  route config {}", rc.value.name);
                for vh in &rc.value.virtual_hosts {
                    let _ = writeln!(out, "    host {}", vh.value.name);
                    for r in &vh.value.routes {
                        route(r, out);
                    }
                }
            }
            Resource::Cluster(c) => {
                let how = match &c.value.discovery {
                    Discovery::Eds => "endpoints from EDS".to_owned(),
                    Discovery::Static(addrs) => format!("static {}", join(addrs)),
                    Discovery::OriginalDestination => "to the original destination".to_owned(),
                };
                let _ = writeln!(out, "  cluster {} ({how})", c.value.name);
            }
            Resource::Endpoints(e) => {
                let addrs: Vec<_> = e.value.endpoints.iter().map(|e| e.address).collect();
                let _ = writeln!(
                    out,
                    "  endpoints {}: {}",
                    e.value.cluster,
                    if addrs.is_empty() {
                        "none ready".to_owned()
                    } else {
                        join(&addrs)
                    }
                );
            }
        }
    }
}

fn listener(l: &Listener, out: &mut String) {
    match &l.accepts {
        Accepts::Bound {
            address, protocol, ..
        } => {
            let addr = match address {
                BindAddress::Any => "0.0.0.0".to_owned(),
                BindAddress::Ip(ip) => ip.to_string(),
            };
            let to = handling(protocol);
            let _ = writeln!(out, "  listener {} on {addr}:{} ({to})", l.name, l.port);
        }
        Accepts::Captured {
            chains, unmatched, ..
        } => {
            let rest = match unmatched {
                Unmatched::Passthrough { cluster } => format!("others pass through {cluster}"),
                Unmatched::Refuse => "others refused".to_owned(),
            };
            let _ = writeln!(
                out,
                "  capture listener {} on port {} ({rest})",
                l.name, l.port
            );
            for c in chains {
                let c = &c.value;
                let to = if c.addresses.is_empty() {
                    "any address".to_owned()
                } else {
                    join(&c.addresses)
                };
                let how = handling(&c.protocol);
                let _ = writeln!(out, "    chain {}: {to} port {} ({how})", c.name, c.port);
            }
        }
    }
}

fn handling(protocol: &ListenerProtocol) -> String {
    match protocol {
        ListenerProtocol::Http { route_config } => format!("http, route config {route_config}"),
        ListenerProtocol::Tcp { clusters } => format!("tcp to {}", split(clusters)),
    }
}

fn route(r: &Route, out: &mut String) {
    let mut when: Vec<String> = Vec::new();
    for m in &r.matches {
        let mut parts = Vec::new();
        match &m.path {
            PathMatch::Any => {}
            PathMatch::Exact(p) => parts.push(format!("path = {p}")),
            PathMatch::Prefix(p) => parts.push(format!("path under {p}")),
            PathMatch::Regex(p) => parts.push(format!("path ~ {p}")),
        }
        if let Some(method) = m.method {
            parts.push(format!("method {method}"));
        }
        for (what, list) in [("header", &m.headers), ("query", &m.query_params)] {
            for h in list {
                parts.push(match &h.value {
                    ValueMatch::Exact(v) => format!("{what} {}={v}", h.name),
                    ValueMatch::Regex(v) => format!("{what} {}~{v}", h.name),
                });
            }
        }
        when.push(if parts.is_empty() {
            "any request".into()
        } else {
            parts.join(" and ")
        });
    }
    if when.is_empty() {
        when.push("any request".into());
    }
    let action = match &r.action {
        RouteAction::Forward(f) => {
            let mut s = format!("to {}", split(&f.clusters));
            if let Some(t) = f.timeout {
                let _ = write!(s, ", timeout {t:?}");
            }
            if let Some(retry) = &f.retry {
                let _ = write!(
                    s,
                    ", {} retries on {}",
                    retry.attempts,
                    retry.retry_on.join(",")
                );
            }
            for m in &f.mirrors {
                let _ = write!(s, ", mirror {}% to {}", m.percent, target(&m.cluster));
            }
            s
        }
        RouteAction::Redirect(rd) => format!("redirect {}", rd.status),
    };
    let fault = r.fault.as_ref().map_or(String::new(), |f| {
        let mut s = String::new();
        if let Some((d, pct)) = f.delay {
            let _ = write!(s, ", delay {d:?} for {pct}%");
        }
        if let Some((status, pct)) = f.abort {
            let _ = write!(s, ", abort {status} for {pct}%");
        }
        s
    });
    let _ = writeln!(
        out,
        "      {}: {} -> {action}{fault}",
        r.name,
        when.join(" or ")
    );
}

fn split(clusters: &[WeightedCluster]) -> String {
    let total: u32 = clusters.iter().map(|c| c.weight).sum();
    if clusters.len() == 1 {
        return target(&clusters[0].target).to_owned();
    }
    clusters
        .iter()
        .map(|c| {
            let pct = (c.weight * 100).checked_div(total).unwrap_or(0);
            format!("{pct}% {}", target(&c.target))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn target(t: &Target) -> &str {
    match t {
        Target::Cluster(name) => name,
        Target::Unresolved => "(missing Service: 503)",
        Target::Invalid => "(invalid backend: 500)",
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
