//! What a run measures: how the proxies are addressed, and the changes made one after the
//! other once every proxy is synced.

use std::net::{IpAddr, Ipv4Addr};

use remora_model::{
    config::Addressing,
    input::{Event, Kind, Object, ObjectKey, Protocol, Service, ServicePort},
};
use remora_synthetic::Synthetic;

/// How the proxies are addressed, as `--addressing` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AddressingFlag {
    /// Traffic redirected to capture listeners: a chain per Service port and a route config
    /// per HTTP Service port. What a cluster runs.
    Captured,
    /// A listener and one route config per outbound port, every Service's virtual host in
    /// it. What local mode runs.
    Explicit,
}

impl AddressingFlag {
    /// The model's setting.
    pub fn addressing(self) -> Addressing {
        match self {
            AddressingFlag::Captured => Addressing::Captured,
            AddressingFlag::Explicit => Addressing::Explicit,
        }
    }

    /// The flag's value, as the command line and the report spell it.
    pub fn name(self) -> &'static str {
        match self {
            AddressingFlag::Captured => "captured",
            AddressingFlag::Explicit => "explicit",
        }
    }
}

/// Which change is measured, as `--change-kind` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChangeKind {
    /// Odd changes move the split of one route by five points, even ones move it back.
    Route,
    /// Odd changes add an HTTP Service (backed by an existing Service's pods), even ones
    /// delete it again.
    Service,
}

impl ChangeKind {
    /// The flag's value, as the command line and the report spell it.
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Route => "route",
            ChangeKind::Service => "service",
        }
    }
}

/// The added Service's name; no synthetic Service has a name without a number.
const ADDED: &str = "xds-load-added";
/// The added Service's cluster IP: below the synthetic Services' addresses (10.96.0.1 up)
/// and apart from the pods' (10.128.0.1 up), so no capture chain matches it but its own.
const ADDED_IP: Ipv4Addr = Ipv4Addr::new(10, 95, 255, 254);

/// The changes of a run, one after the other.
pub struct Changes<'a> {
    synthetic: &'a Synthetic,
    kind: ChangeKind,
    /// Changes made so far.
    made: u32,
}

/// One change: what it is, for the report, and the events that make it.
pub struct Change {
    /// Names what changed: `route <ns>/<name>`, `Service <ns>/<name> added`.
    pub what: String,
    pub events: Vec<Event>,
}

impl<'a> Changes<'a> {
    pub fn new(synthetic: &'a Synthetic, kind: ChangeKind) -> Changes<'a> {
        Changes {
            synthetic,
            kind,
            made: 0,
        }
    }

    /// The next change: odd ones make it, even ones undo it.
    pub fn next_change(&mut self) -> Change {
        self.made += 1;
        let make = self.made % 2 == 1;
        match self.kind {
            ChangeKind::Route => self.route(make),
            ChangeKind::Service => self.service(make),
        }
    }

    /// The route on the HTTP port of a Service halfway through the mesh, in a team
    /// namespace, as the model's benchmarks change it.
    fn route(&self, make: bool) -> Change {
        let i = self.synthetic.shape().services / 2;
        let object = if make {
            self.synthetic.route_change(i)
        } else {
            self.synthetic.route(i)
        };
        Change {
            what: format!("route {}", object.key()),
            events: vec![Event::Upsert(object)],
        }
    }

    /// The added Service lives beside Service 0, in the first namespace: a shared one when
    /// the shape has any, which every egress scope reaches (and without scopes every
    /// proxy reaches every namespace). Its slice lists Service 0's pods, on its HTTP port.
    fn service(&self, make: bool) -> Change {
        let model = self
            .synthetic
            .service_key(0)
            .expect("a synthetic mesh has at least one Service");
        let key = ObjectKey::new(&model.namespace, ADDED);
        let slice_key = ObjectKey::new(&model.namespace, slice_name());
        let events = if make {
            vec![
                Event::Upsert(Object::Service(added_service(&model.namespace))),
                Event::Upsert(self.added_slice()),
            ]
        } else {
            vec![
                Event::Delete(Kind::EndpointSlice, slice_key),
                Event::Delete(Kind::Service, key.clone()),
            ]
        };
        let verb = if make { "added" } else { "deleted" };
        Change {
            what: format!("Service {key} {verb}"),
            events,
        }
    }

    /// Service 0's slice, moved to the added Service and cut to its one port.
    fn added_slice(&self) -> Object {
        let mut object = self.synthetic.endpoint_slice(0);
        if let Object::EndpointSlice(slice) = &mut object {
            let http = http_port();
            slice.name = slice_name();
            slice.service = ADDED.into();
            slice.ports.retain(|p| p.name == http.name);
        }
        object
    }
}

fn slice_name() -> String {
    format!("{ADDED}-slice")
}

/// The synthetic Services' HTTP port, the one the added Service has.
fn http_port() -> ServicePort {
    ServicePort {
        name: Some("http".into()),
        port: 8080,
        protocol: Protocol::Http,
    }
}

fn added_service(namespace: &str) -> Service {
    Service {
        namespace: namespace.into(),
        name: ADDED.into(),
        cluster_ip: Some(IpAddr::V4(ADDED_IP)),
        ports: vec![http_port()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remora_xds_load::shape_for;

    fn synthetic() -> Synthetic {
        Synthetic::new(shape_for(100, false))
    }

    #[test]
    fn the_names_the_report_gives_are_the_flags_values() {
        use clap::ValueEnum;
        for flag in AddressingFlag::value_variants() {
            assert_eq!(AddressingFlag::from_str(flag.name(), false), Ok(*flag));
        }
        for kind in ChangeKind::value_variants() {
            assert_eq!(ChangeKind::from_str(kind.name(), false), Ok(*kind));
        }
    }

    #[test]
    fn route_changes_move_one_split_and_move_it_back() {
        let synthetic = synthetic();
        let mut changes = Changes::new(&synthetic, ChangeKind::Route);
        let (first, second, third) = (
            changes.next_change(),
            changes.next_change(),
            changes.next_change(),
        );
        assert_eq!(first.what, second.what);
        assert!(first.what.starts_with("route "), "{}", first.what);
        let upsert = |c: &Change| match &c.events[..] {
            [Event::Upsert(o)] => format!("{o:?}"),
            other => panic!("one upsert expected, got {other:?}"),
        };
        assert_ne!(upsert(&first), upsert(&second));
        assert_eq!(upsert(&first), upsert(&third));
        assert_eq!(
            upsert(&second),
            format!("{:?}", synthetic.route(synthetic.shape().services / 2))
        );
    }

    #[test]
    fn service_changes_add_a_service_with_existing_pods_then_delete_it() {
        let synthetic = synthetic();
        let namespace = synthetic.service_key(0).expect("a Service").namespace;
        let mut changes = Changes::new(&synthetic, ChangeKind::Service);
        let add = changes.next_change();
        assert_eq!(add.what, format!("Service {namespace}/{ADDED} added"));
        let [
            Event::Upsert(Object::Service(service)),
            Event::Upsert(Object::EndpointSlice(slice)),
        ] = &add.events[..]
        else {
            panic!("a Service and its slice expected, got {:?}", add.events);
        };
        assert_eq!(service.ports, [http_port()]);
        assert_eq!((&*slice.service, &*slice.namespace), (ADDED, &*namespace));
        assert_eq!(slice.ports.len(), 1);
        assert_eq!(slice.ports[0].name.as_deref(), Some("http"));
        let Object::EndpointSlice(original) = synthetic.endpoint_slice(0) else {
            panic!("a slice");
        };
        assert_eq!(slice.endpoints, original.endpoints);

        let delete = changes.next_change();
        assert_eq!(delete.what, format!("Service {namespace}/{ADDED} deleted"));
        assert!(matches!(
            &delete.events[..],
            [
                Event::Delete(Kind::EndpointSlice, s),
                Event::Delete(Kind::Service, k)
            ] if s.name == slice.name && k.name == ADDED
        ));
        assert!(matches!(
            &changes.next_change().events[..],
            [Event::Upsert(_), Event::Upsert(_)]
        ));
    }

    #[test]
    fn the_added_service_is_in_a_namespace_every_egress_scope_reaches_at_its_own_address() {
        let synthetic = Synthetic::new(shape_for(1_000, true));
        let namespace = synthetic.service_key(0).expect("a Service").namespace;
        assert!(namespace.starts_with("shared-"), "{namespace}");
        let taken: Vec<_> = synthetic
            .objects()
            .into_iter()
            .filter_map(|o| match o {
                Object::Service(s) => s.cluster_ip,
                _ => None,
            })
            .collect();
        assert_eq!(taken.len(), 100);
        assert!(!taken.contains(&IpAddr::V4(ADDED_IP)));
    }
}
