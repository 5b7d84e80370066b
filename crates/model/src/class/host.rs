//! The virtual host of one Service port: the same routes in both addressings, told apart by
//! the `Host` header (explicit) or already by the filter chain of the destination (captured).

use std::{net::IpAddr, sync::Arc};

use crate::{
    config::{Forward, Route, RouteAction, VirtualHost},
    input::{MeshSettings, ObjectKey},
    policy::Defaults,
};

/// Which host names a virtual host answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum HostNames {
    /// Every name: the filter chain of the Service port already chose the host.
    Any,
    /// The Service's names, with the short name for clients in its own namespace.
    SameNamespace,
    /// The Service's names, without the short name.
    OtherNamespace,
}

/// `<service>.<namespace>.svc.<cluster domain>:<port>`: unique in a route config, and the
/// name of the captured filter chain and route config of that Service port.
pub(crate) fn vhost_name(settings: &MeshSettings, service: &ObjectKey, port: u16) -> Arc<str> {
    let (name, ns, domain) = (&service.name, &service.namespace, &settings.cluster_domain);
    format!("{name}.{ns}.svc.{domain}:{port}").into()
}

pub(crate) fn virtual_host(
    settings: &MeshSettings,
    service: &ObjectKey,
    cluster_ip: Option<IpAddr>,
    port: u16,
    names: HostNames,
    routes: &[Route],
    defaults: &Defaults,
) -> VirtualHost {
    let domains = match names {
        HostNames::Any => vec!["*".to_owned()],
        HostNames::SameNamespace | HostNames::OtherNamespace => {
            domains(settings, service, cluster_ip, port, names)
        }
    };
    let routes = routes
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if let RouteAction::Forward(Forward { timeout, retry, .. }) = &mut r.action {
                if timeout.is_none() {
                    *timeout = defaults.request_timeout;
                }
                if retry.is_none() {
                    retry.clone_from(&defaults.retry);
                }
            }
            r
        })
        .collect();
    VirtualHost {
        name: vhost_name(settings, service, port),
        domains,
        routes,
        authz: None,
    }
}

fn domains(
    settings: &MeshSettings,
    service: &ObjectKey,
    cluster_ip: Option<IpAddr>,
    port: u16,
    names: HostNames,
) -> Vec<String> {
    let (name, ns, domain) = (&service.name, &service.namespace, &settings.cluster_domain);
    let mut hosts = vec![
        format!("{name}.{ns}"),
        format!("{name}.{ns}.svc"),
        format!("{name}.{ns}.svc.{domain}"),
    ];
    // The short name only means this Service to clients in its own namespace.
    if names == HostNames::SameNamespace {
        hosts.insert(0, name.clone());
    }
    if let Some(ip) = cluster_ip {
        hosts.push(match ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        });
    }
    hosts
        .iter()
        .flat_map(|h| [h.clone(), format!("{h}:{port}")])
        .collect()
}
