//! The strongest check that the translation is right: a real Envoy accepts it. Each proxy's
//! resources go into a static bootstrap (binary protobuf, which Envoy reads from a `.pb`
//! file) and `envoy --mode validate` checks it as it would check an xDS update: every field,
//! every typed config, every regex, and, since route configs are inlined, that every cluster
//! a route names exists.

mod support;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use envoy_types::pb::envoy::config::{
    bootstrap::v3::{
        Bootstrap,
        bootstrap::{DynamicResources, StaticResources},
    },
    cluster::v3::{Cluster, cluster},
    core::v3::{
        Address, ApiConfigSource, ApiVersion, GrpcService, Node, Pipe, address,
        api_config_source::ApiType,
        grpc_service::{EnvoyGrpc, TargetSpecifier},
    },
    endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
    listener::v3::{Listener, filter::ConfigType},
    route::v3::RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use prost::{Message, Name};
use remora_api::{
    sidecar_policy::{AccessLogFormat, MtlsMode, UnknownDestinations},
    spiffe::SpiffeId,
};
use remora_envoy::{
    AccessLogSink, Options,
    bootstrap::{self as sidecar, XdsTls},
    rbac,
    sds::{SDS_CLUSTER, SDS_SOCKET},
    translate,
};
use remora_model::{
    Mesh,
    config::{self, Addressing, Discovery, Resource, Versioned},
    input::{Event, MeshSettings, Object, ObjectKey},
};
use remora_synthetic::{Shape, Synthetic};
use remora_test_support::envoy_bin;
use support::*;

const XDS_CLUSTER: &str = "xds";

/// The proxy's config as a bootstrap: listeners with their route configs inlined, all
/// clusters (EDS ones still pointing at ADS, which needs a control plane cluster to name),
/// and each endpoints resource as the load assignment of a static cluster of its own.
fn bootstrap(d: Decoded, node: &str) -> Bootstrap {
    let listeners = d
        .listeners
        .into_values()
        .map(|l| inline_routes(l, &d.routes))
        .collect();
    let xds = translate(
        &Resource::Cluster(Versioned::new(config::Cluster {
            name: XDS_CLUSTER.into(),
            connect_timeout: Duration::from_secs(1),
            discovery: Discovery::Static(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 1))]),
            outlier_detection: None,
            circuit_breaker: None,
            http2: true,
            mtls: None,
        })),
        &Options::default(),
    );
    let mut clusters: Vec<Cluster> = d.clusters.into_values().collect();
    clusters.push(Cluster::decode(xds.any.value.as_slice()).expect("xds cluster"));
    clusters.extend(d.endpoints.into_values().map(|mut la| {
        let name = format!("endpoints-of|{}", la.cluster_name);
        la.cluster_name = name.clone();
        Cluster {
            name,
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            )),
            load_assignment: Some(la),
            ..Default::default()
        }
    }));
    Bootstrap {
        node: Some(Node {
            id: node.to_owned(),
            cluster: "shop".to_owned(),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            listeners,
            clusters,
            secrets: Vec::new(),
        }),
        dynamic_resources: Some(DynamicResources {
            ads_config: Some(ApiConfigSource {
                api_type: ApiType::Grpc as i32,
                transport_api_version: ApiVersion::V3 as i32,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                        cluster_name: XDS_CLUSTER.to_owned(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn inline_routes(mut l: Listener, routes: &BTreeMap<String, RouteConfiguration>) -> Listener {
    for f in l
        .filter_chains
        .iter_mut()
        .flat_map(|c| c.filters.iter_mut())
    {
        let Some(ConfigType::TypedConfig(any)) = &mut f.config_type else {
            continue;
        };
        if any.type_url != HttpConnectionManager::type_url() {
            continue;
        }
        let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
        let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
            panic!("{}: RDS expected", l.name);
        };
        let rc = routes[&rds.route_config_name].clone();
        hcm.route_specifier = Some(RouteSpecifier::RouteConfig(rc));
        any.value = hcm.encode_to_vec();
    }
    l
}

/// `b` with the static cluster that reaches the pod's identity agent, as a sidecar's
/// bootstrap has it with workload identity: the secrets of mutual TLS come over it.
fn with_sds_cluster(mut b: Bootstrap) -> Bootstrap {
    let http2 = translate(
        &Resource::Cluster(Versioned::new(config::Cluster {
            name: SDS_CLUSTER.into(),
            connect_timeout: Duration::from_secs(1),
            discovery: Discovery::Static(vec![]),
            outlier_detection: None,
            circuit_breaker: None,
            http2: true,
            mtls: None,
        })),
        &Options::default(),
    );
    let pipe = Address {
        address: Some(address::Address::Pipe(Pipe {
            path: SDS_SOCKET.to_owned(),
            mode: 0,
        })),
    };
    let sds = Cluster {
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: SDS_CLUSTER.to_owned(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(pipe),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Cluster::decode(http2.any.value.as_slice()).expect("sds cluster")
    };
    if let Some(statics) = &mut b.static_resources {
        statics.clusters.push(sds);
    }
    b
}

fn validate(envoy: &PathBuf, b: &Bootstrap, label: &str) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("remora-envoy-{label}.pb"));
    std::fs::write(&path, b.encode_to_vec()).expect("write bootstrap");
    validate_file(envoy, &path, label);
}

fn validate_file(envoy: &PathBuf, path: &PathBuf, label: &str) {
    let out = Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warning",
            "-c",
        ])
        .arg(path)
        .output()
        .expect("run envoy");
    assert!(
        out.status.success(),
        "Envoy rejected {label} ({}):\n{}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn envoy_accepts_every_proxy_of_the_shop() {
    let envoy = envoy_bin();
    let m = shop();
    for pod in ["frontend", "reviews-v1", "catalog-0", "db-v1"] {
        let d = decode(&config(&m, pod), &Options::default());
        validate(&envoy, &bootstrap(d, pod), pod);
    }
}

#[test]
fn envoy_accepts_other_options_log_formats_and_host_changes() {
    let envoy = envoy_bin();
    let options = Options {
        access_log: AccessLogSink::Stderr,
        bind_outbound_to: Some("127.0.0.2".parse().expect("ip")),
    };
    let text = FLEET_POLICY.replace(
        "format: Json",
        &format!("format: {:?}", AccessLogFormat::Text),
    );
    // Envoy refuses Host in header lists; the translation makes setting it a host rewrite
    // and drops removing it.
    let route = REVIEWS_ROUTE.replace(
        "  - name: default\n",
        "  - name: default\n    requestHeaders: {set: [{name: Host, value: reviews.example}]}\n    responseHeaders: {remove: [host]}\n",
    );
    assert_ne!(route, REVIEWS_ROUTE);
    let mut events = shop_events(&route);
    events.push(policy(&text));
    let d = decode(&config(&mesh(events), "frontend"), &options);
    validate(&envoy, &bootstrap(d, "frontend"), "frontend-stderr-text");
}

#[test]
fn envoy_accepts_every_captured_proxy_of_the_shop_whatever_it_does_with_unknown_destinations() {
    let envoy = envoy_bin();
    for unknown in [
        UnknownDestinations::Passthrough,
        UnknownDestinations::Refuse,
    ] {
        let m = captured_shop(unknown);
        for pod in ["frontend", "reviews-v1", "catalog-0", "db-v1"] {
            let d = decode(&config(&m, pod), &Options::default());
            assert!(d.listeners.contains_key("outbound"), "{pod}: captured");
            validate(
                &envoy,
                &bootstrap(d, pod),
                &format!("{pod}-captured-{unknown:?}"),
            );
        }
    }
}

/// With workload identity, in every mode: inbound chains that terminate mutual TLS, the
/// passthrough of mutual TLS, clusters that originate it to marked endpoints, all with
/// their secrets from the agent's SDS cluster.
#[test]
fn envoy_accepts_every_captured_proxy_of_the_shop_with_mutual_tls_in_every_mode() {
    let envoy = envoy_bin();
    for mode in [MtlsMode::Permissive, MtlsMode::Strict, MtlsMode::Disabled] {
        let m = meshed_shop(mode);
        for pod in ["frontend", "reviews-v1", "catalog-0", "db-v1"] {
            let d = decode(&config(&m, pod), &Options::default());
            let tls_chains = d.listeners["inbound"]
                .filter_chains
                .iter()
                .filter(|c| c.transport_socket.is_some())
                .count();
            assert_eq!(tls_chains > 0, mode != MtlsMode::Disabled, "{pod} {mode:?}");
            let label = format!("{pod}-mtls-{mode:?}");
            validate(&envoy, &with_sds_cluster(bootstrap(d, pod)), &label);
        }
    }
}

/// Every kind of access rule: deny and allow, enforced and audited, by identity, service
/// account, namespace and certificate, by port, path, method, host and header.
fn every_access_rule() -> serde_json::Value {
    serde_json::json!({
        "rules": [
            {"name": "no-plaintext-admin", "action": "Deny", "from": [{"authenticated": false}],
             "to": {"http": {"paths": [{"type": "PathPrefix", "value": "/admin"}]}}},
            {"name": "no-ops", "action": "Deny", "from": [{"namespaces": ["ops"]}],
             "to": {"ports": [8080, 5432]}},
            {"name": "frontend",
             "from": [{"serviceAccounts": ["default"], "namespaces": ["shop"]}],
             "to": {"ports": [8080, 50051], "http": {
                 "paths": [{"type": "Exact", "value": "/reviews"},
                           {"type": "PathPrefix", "value": "/api/"}],
                 "methods": ["GET", "POST"],
                 "hosts": ["reviews", "*.shop.svc.cluster.local"],
                 "headers": [{"name": "x-env", "value": "prod"},
                             {"type": "RegularExpression", "name": "x-id", "value": "[0-9]+"}]}}},
            {"name": "by-identity",
             "from": [{"identities": ["spiffe://cluster.local/ns/shop/sa/default"]}]},
            {"name": "any-certificate", "from": [{"authenticated": true}],
             "to": {"ports": [5432]}},
            {"name": "trial-no-delete", "action": "Deny", "mode": "Audit",
             "to": {"http": {"methods": ["DELETE"]}}},
            {"name": "trial-shop", "mode": "Audit", "from": [{"namespaces": ["shop"]}]},
        ]
    })
}

/// The RBAC filters of every chain of a listener (the default chain's included): network
/// filters, and HTTP filters of its connection managers.
fn rbac_filters(l: &Listener) -> usize {
    let is_rbac = |name: &str| name == rbac::DENY_FILTER || name == rbac::ALLOW_FILTER;
    let filters = l
        .filter_chains
        .iter()
        .chain(&l.default_filter_chain)
        .flat_map(|c| &c.filters);
    let mut count = 0;
    for f in filters {
        count += usize::from(is_rbac(&f.name));
        if let Some(ConfigType::TypedConfig(any)) = &f.config_type
            && any.type_url == HttpConnectionManager::type_url()
        {
            let hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
            count += hcm.http_filters.iter().filter(|h| is_rbac(&h.name)).count();
        }
    }
    count
}

/// Proxies that access policies protect: captured with mutual TLS (each port's chains and
/// both passthroughs enforce the rules, as network filters or HTTP ones), and explicit.
#[test]
fn envoy_accepts_proxies_protected_by_every_kind_of_access_rule() {
    let envoy = envoy_bin();
    for mode in [MtlsMode::Permissive, MtlsMode::Strict] {
        let mut m = meshed_shop(mode);
        drop(m.apply([access_policy("every-rule", every_access_rule())]));
        for pod in ["reviews-v1", "catalog-0", "db-v1"] {
            let d = decode(&config(&m, pod), &Options::default());
            // Deny and allow at least, on each chain: the port's one or two, and the
            // passthroughs (a TCP chain has a deny filter per enforced deny rule).
            let chains = d.listeners["inbound"].filter_chains.len() - 1;
            let rbac = rbac_filters(&d.listeners["inbound"]);
            assert!(
                rbac >= 2 * (chains + usize::from(mode == MtlsMode::Permissive)),
                "{pod} {mode:?}: {rbac} RBAC filters on {chains} chains"
            );
            let label = format!("{pod}-access-{mode:?}");
            validate(&envoy, &with_sds_cluster(bootstrap(d, pod)), &label);
        }
    }
    let mut events = shop_events(REVIEWS_ROUTE);
    events.push(access_policy("every-rule", every_access_rule()));
    let m = mesh(events);
    for pod in ["reviews-v1", "db-v1"] {
        let d = decode(&config(&m, pod), &Options::default());
        let protected: Vec<&str> = d
            .listeners
            .values()
            .filter(|l| rbac_filters(l) >= 2)
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(
            protected.len(),
            1,
            "{pod}: its inbound listener alone, {protected:?}"
        );
        validate(
            &envoy,
            &bootstrap(d, pod),
            &format!("{pod}-access-explicit"),
        );
    }
}

/// The sidecar's own bootstrap, with TLS to the control plane by name and by address.
#[test]
fn envoy_accepts_a_bootstrap_with_tls_to_the_control_plane() {
    let envoy = envoy_bin();
    let tls = XdsTls {
        control_plane: SpiffeId::new("cluster.local", "remora-system", "remora"),
    };
    for (label, host) in [("name", "remora.remora-system.svc"), ("ip", "10.96.0.10")] {
        let b = sidecar::Bootstrap {
            proxy: ObjectKey::new("shop", "frontend"),
            service_account: "frontend".into(),
            workload: "Deployment/frontend".into(),
            xds_host: host.into(),
            xds_port: 15012,
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, 15000)),
            delta: true,
            max_regex_program_size: remora_re2::DEFAULT_MAX_PROGRAM_SIZE,
        };
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("remora-envoy-bootstrap-tls-{label}.json"));
        let json = b.to_json_with(Some(&tls));
        std::fs::write(&path, json.to_string()).expect("write bootstrap");
        validate_file(&envoy, &path, &format!("bootstrap-tls-{label}"));
    }
}

/// A larger mesh, captured: HTTP, gRPC and TCP Service ports, routes, several namespaces.
#[test]
fn envoy_accepts_captured_proxies_of_a_synthetic_mesh() {
    let envoy = envoy_bin();
    let synthetic = Synthetic::new(Shape {
        namespaces: 3,
        shared_namespaces: 1,
        services: 40,
        pods: 12,
        routes: 20,
        egress: false,
        seed: 7,
    });
    for unknown in [
        UnknownDestinations::Passthrough,
        UnknownDestinations::Refuse,
    ] {
        let mut mesh = Mesh::new(MeshSettings {
            addressing: Addressing::Captured,
            ..Default::default()
        });
        let objects = synthetic.objects().into_iter().map(|mut o| {
            if let Object::SidecarPolicy(p) = &mut o {
                p.spec.proxy.interception.unknown_destinations = unknown;
            }
            Event::Upsert(o)
        });
        drop(mesh.apply(objects));
        let proxies: Vec<_> = mesh.proxies().take(3).cloned().collect();
        assert_eq!(proxies.len(), 3);
        for proxy in proxies {
            let d = decode(
                &mesh.proxy_config(&proxy).expect("config"),
                &Options::default(),
            );
            let outbound = &d.listeners["outbound"];
            let chains = outbound.filter_chains.len();
            assert!(chains > 20, "{proxy}: {chains} chains");
            assert_eq!(
                outbound.default_filter_chain.is_some(),
                unknown == UnknownDestinations::Passthrough
            );
            let label = format!("synthetic-{}-{unknown:?}", proxy.name);
            validate(&envoy, &bootstrap(d, &proxy.name), &label);
        }
    }
}

/// The check has teeth: a route naming a cluster the proxy lacks is refused.
#[test]
fn envoy_refuses_a_route_to_a_missing_cluster() {
    let envoy = envoy_bin();
    let mut d = decode(&config(&shop(), "frontend"), &Options::default());
    d.clusters.remove(remora_envoy::UNRESOLVED_CLUSTER);
    let b = bootstrap(d, "frontend");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("remora-envoy-broken.pb");
    std::fs::write(&path, b.encode_to_vec()).expect("write bootstrap");
    let out = Command::new(&envoy)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warning",
            "-c",
        ])
        .arg(&path)
        .output()
        .expect("run envoy");
    assert!(!out.status.success(), "Envoy accepted a route to nowhere");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(remora_envoy::UNRESOLVED_CLUSTER),
        "unexpected failure: {stderr}"
    );
}

/// A workload whose only audited rule denies: its audit log carries no tag of audited allow
/// rules, which Envoy would refuse empty.
#[test]
fn envoy_accepts_a_proxy_whose_only_audit_rule_denies() {
    let envoy = envoy_bin();
    let mut m = meshed_shop(MtlsMode::Permissive);
    let spec = serde_json::json!({"rules": [
        {"name": "legacy", "action": "Deny", "mode": "Audit", "from": [{"serviceAccounts": ["legacy"]}]}
    ]});
    drop(m.apply([access_policy("audit-deny", spec)]));
    for pod in ["reviews-v1", "db-v1"] {
        let d = decode(&config(&m, pod), &Options::default());
        validate(
            &envoy,
            &with_sds_cluster(bootstrap(d, pod)),
            &format!("{pod}-audit-deny"),
        );
    }
}
