//! Synthetic meshes: a deterministic generator of the inputs the model reads (namespaces,
//! Services, EndpointSlices, sidecar pods, policies and routes), sized by a [`Shape`].
//!
//! Benchmarks need a mesh as large as a real cluster, the same one on every run, and changes
//! that really change something; a real cluster's dump is none of these. Every object here is
//! a pure function of the shape, its seed and the object's index, so a benchmark can also ask
//! for one object again, or for a modified version of it, without keeping the whole mesh.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod policies;
mod rng;
mod routes;

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use remora_model::input::{
    ContainerPort, Endpoint, EndpointPort, EndpointSlice, Labels, MeshSettings, Namespace, Object,
    ObjectKey, Pod, Protocol, ReferenceGrant, Service, ServicePort,
};
use remora_test_support::labels;

pub use crate::policies::policy_spec;
use crate::{
    policies::{fleet_spec, policy},
    rng::SplitMix64,
};

/// The size and flavour of a synthetic mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Namespaces the Services are spread over, in contiguous blocks.
    pub namespaces: usize,
    /// How many of the first namespaces hold shared platform Services: cross-namespace
    /// backends point into them, and an egress scope always lets a namespace reach them.
    pub shared_namespaces: usize,
    /// Services, each with two ports: an HTTP one, and a second that is gRPC, HTTP or TCP.
    pub services: usize,
    /// Sidecar pods, dealt round-robin to the Services.
    pub pods: usize,
    /// Routes. Route `i` governs port `(i / services) % 2` of Service `i % services`, so up
    /// to twice as many routes as Services each govern their own port; more would conflict.
    pub routes: usize,
    /// Gives every namespace a policy whose egress scope limits its proxies to Services of
    /// their own namespace and of the shared ones, which bounds each proxy's config.
    pub egress: bool,
    /// Seeds every random choice: the same shape and seed always give the same mesh.
    pub seed: u64,
}

impl Shape {
    /// The mesh the performance targets are stated for: 1,000 Services, 10,000 sidecar pods
    /// and 2,000 routes in 50 namespaces, without egress scopes (every proxy reaches every
    /// Service, the largest config).
    pub fn reference() -> Shape {
        Shape {
            namespaces: 50,
            shared_namespaces: 3,
            services: 1_000,
            pods: 10_000,
            routes: 2_000,
            egress: false,
            seed: 0x5eed_2026,
        }
    }
}

const HTTP_PORT: u16 = 8080;
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
/// Every fifth pod of a Service runs the canary version.
const CANARY_EVERY: usize = 5;
/// Service names are a word and the Service's index, so they read like a cluster's and
/// are still unique.
const WORDS: [&str; 16] = [
    "cart",
    "checkout",
    "catalog",
    "reviews",
    "ratings",
    "payments",
    "ledger",
    "search",
    "profile",
    "inventory",
    "shipping",
    "billing",
    "auth",
    "notify",
    "media",
    "orders",
];
/// Streams of the generator, so the choices for one kind of object never shift those of
/// another when a shape changes.
const STREAM_SERVICE: u64 = 1;
const STREAM_ROUTE: u64 = 2;

/// A Service's second port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SecondPort {
    Grpc,
    Admin,
    Tcp,
}

impl SecondPort {
    fn port(self) -> ServicePort {
        let (name, port, protocol) = match self {
            SecondPort::Grpc => ("grpc", 9090, Protocol::Http2),
            SecondPort::Admin => ("http-admin", 8081, Protocol::Http),
            SecondPort::Tcp => ("tcp-stream", 9000, Protocol::Tcp),
        };
        ServicePort {
            name: Some(name.into()),
            port,
            protocol,
        }
    }
}

/// What is decided once per Service and needed by several objects.
#[derive(Clone, Debug)]
struct ServicePlan {
    /// The namespace's index, which tells whether it is a shared one.
    ns: usize,
    namespace: String,
    name: String,
    ip: Ipv4Addr,
    second: SecondPort,
}

impl ServicePlan {
    fn ports(&self) -> [ServicePort; 2] {
        [
            ServicePort {
                name: Some("http".into()),
                port: HTTP_PORT,
                protocol: Protocol::Http,
            },
            self.second.port(),
        ]
    }
}

/// A synthetic mesh: the plan every object derives from.
#[derive(Clone, Debug)]
pub struct Synthetic {
    shape: Shape,
    services: Vec<ServicePlan>,
}

impl Synthetic {
    /// Plans the mesh; objects are built when asked for.
    ///
    /// # Panics
    ///
    /// If the shape has no namespace or no Service: pods and routes need one to belong to.
    pub fn new(shape: Shape) -> Synthetic {
        assert!(
            shape.namespaces > 0 && shape.services > 0,
            "a synthetic mesh needs at least one namespace and one Service, got {shape:?}"
        );
        let services = (0..shape.services)
            .map(|j| {
                let mut rng = SplitMix64::stream(shape.seed, STREAM_SERVICE, j);
                let word = WORDS[rng.below(WORDS.len())];
                // 45% gRPC, 25% a second HTTP port, 30% TCP.
                let second = match rng.below(100) {
                    0..45 => SecondPort::Grpc,
                    45..70 => SecondPort::Admin,
                    _ => SecondPort::Tcp,
                };
                let ns = j * shape.namespaces / shape.services;
                ServicePlan {
                    ns,
                    namespace: namespace_name(&shape, ns),
                    name: format!("{word}-{j}"),
                    ip: offset(Ipv4Addr::new(10, 96, 0, 1), j),
                    second,
                }
            })
            .collect();
        Synthetic { shape, services }
    }

    /// The shape the mesh was planned from.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Every object of the mesh: namespaces, policies, Services, slices, pods and routes.
    pub fn objects(&self) -> Vec<Object> {
        let s = &self.shape;
        // Written for the model's default settings: the root namespace holds the fleet
        // policy, and the mesh label opts the other namespaces in.
        let settings = MeshSettings::default();
        let mut out = Vec::with_capacity(s.namespaces * 2 + 2 + s.services * 2 + s.pods + s.routes);
        out.push(Object::Namespace(Namespace {
            name: settings.root_namespace.clone(),
            labels: Labels::new(),
        }));
        for k in 0..s.namespaces {
            let name = namespace_name(s, k);
            out.push(Object::Namespace(Namespace {
                labels: labels(&[(&settings.mesh_label, "enabled"), ("team", &name)]),
                name,
            }));
        }
        out.push(policy(
            &settings.root_namespace,
            "fleet-default",
            fleet_spec(),
        ));
        if s.egress {
            for k in 0..s.namespaces {
                out.push(policy(&namespace_name(s, k), "egress", self.egress_spec()));
            }
        }
        for j in 0..s.services {
            out.push(self.service(j));
            out.push(self.endpoint_slice(j));
        }
        // The shared namespaces open their Services to every namespace's routes.
        for k in 0..s.shared_namespaces.min(s.namespaces) {
            out.push(Object::ReferenceGrant(ReferenceGrant {
                namespace: namespace_name(s, k),
                name: "mesh-routes".into(),
                from: (0..s.namespaces)
                    .map(|n| {
                        let (group, kind) = remora_model::routing::TRAFFIC_ROUTE;
                        (group.into(), kind.into(), namespace_name(s, n))
                    })
                    .collect(),
                to: vec![None],
            }));
        }
        for k in 0..s.pods {
            out.push(Object::Pod(self.pod(k)));
        }
        for i in 0..s.routes {
            out.push(self.route(i));
        }
        out
    }

    /// The Service with index `j`.
    pub fn service_key(&self, j: usize) -> Option<ObjectKey> {
        self.services
            .get(j)
            .map(|p| ObjectKey::new(&p.namespace, &p.name))
    }

    /// The Service and port route `i` governs.
    pub fn route_parent(&self, i: usize) -> Option<(ObjectKey, u16)> {
        let plan = self.services.get(i % self.shape.services)?;
        let port = &plan.ports()[(i / self.shape.services) % 2];
        Some((ObjectKey::new(&plan.namespace, &plan.name), port.port))
    }

    /// Route `i` as [`Synthetic::objects`] has it.
    pub fn route(&self, i: usize) -> Object {
        self.route_object(i, 0)
    }

    /// Route `i` with its split moved five points towards the second backend: what a canary
    /// step looks like. Applying [`Synthetic::route`] again moves it back.
    pub fn route_change(&self, i: usize) -> Object {
        self.route_object(i, 5)
    }

    /// The slice of Service `j` as [`Synthetic::objects`] has it: every endpoint ready but
    /// the newest pod's, which is still starting (as in a cluster mid-rollout).
    pub fn endpoint_slice(&self, j: usize) -> Object {
        self.slice_object(j, false)
    }

    /// The slice of Service `j` once its starting pod is ready. Applying
    /// [`Synthetic::endpoint_slice`] again takes it back out.
    pub fn endpoint_change(&self, j: usize) -> Object {
        self.slice_object(j, true)
    }

    fn service(&self, j: usize) -> Object {
        let plan = &self.services[j];
        Object::Service(Service {
            namespace: plan.namespace.clone(),
            name: plan.name.clone(),
            cluster_ip: Some(IpAddr::V4(plan.ip)),
            ports: plan.ports().into(),
        })
    }

    /// How many pods Service `j` has: the pods are dealt round-robin.
    fn pod_count(&self, j: usize) -> usize {
        let s = &self.shape;
        s.pods / s.services + usize::from(j < s.pods % s.services)
    }

    /// Pod `k` belongs to Service `k % services` and is its `k / services`-th pod.
    fn pod(&self, k: usize) -> Pod {
        let j = k % self.shape.services;
        let m = k / self.shape.services;
        let plan = &self.services[j];
        let version = version_of(m);
        Pod {
            namespace: plan.namespace.clone(),
            name: format!("{}-{version}-{m}", plan.name),
            labels: labels(&[("app", &plan.name), ("version", version)]),
            service_account: plan.name.clone(),
            ip: Some(IpAddr::V4(pod_ip(k))),
            sidecar: true,
            ports: plan
                .ports()
                .iter()
                .map(|p| ContainerPort {
                    port: p.port,
                    protocol: p.protocol,
                })
                .collect(),
        }
    }

    fn slice_object(&self, j: usize, all_ready: bool) -> Object {
        let plan = &self.services[j];
        let count = self.pod_count(j);
        let endpoints = (0..count)
            .map(|m| {
                let k = m * self.shape.services + j;
                Endpoint {
                    address: IpAddr::V4(pod_ip(k)),
                    // A Service with a single pod keeps it ready: it has nothing to roll.
                    ready: all_ready || count < 2 || m + 1 < count,
                    zone: Some(ZONES[m % ZONES.len()].into()),
                    pod: Some(format!("{}-{}-{m}", plan.name, version_of(m))),
                }
            })
            .collect();
        Object::EndpointSlice(EndpointSlice {
            namespace: plan.namespace.clone(),
            name: format!("{}-slice", plan.name),
            service: plan.name.clone(),
            ports: plan
                .ports()
                .iter()
                .map(|p| EndpointPort {
                    name: p.name.clone(),
                    port: p.port,
                })
                .collect(),
            endpoints,
        })
    }
}

fn namespace_name(shape: &Shape, k: usize) -> String {
    if k < shape.shared_namespaces {
        format!("shared-{k}")
    } else {
        format!("team-{k:02}")
    }
}

fn version_of(m: usize) -> &'static str {
    if m % CANARY_EVERY == CANARY_EVERY - 1 {
        "v2"
    } else {
        "v1"
    }
}

fn pod_ip(k: usize) -> Ipv4Addr {
    offset(Ipv4Addr::new(10, 128, 0, 1), k)
}

/// `base + n`, wrapping within IPv4 (shapes large enough to wrap are far beyond any cluster).
fn offset(base: Ipv4Addr, n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).wrapping_add(u32::try_from(n).unwrap_or(u32::MAX)))
}

/// Object `i` of a kind was created `i` seconds after the first, which orders them.
fn created(i: usize) -> Option<Time> {
    let secs = 1_767_225_600 + i64::try_from(i).unwrap_or(i64::MAX / 2);
    Timestamp::from_second(secs).ok().map(Time)
}
