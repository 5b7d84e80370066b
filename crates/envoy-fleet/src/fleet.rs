//! A running fleet: the folder, local mode serving it, the echo backends and one Envoy per
//! proxy pod. Dropping it kills the Envoys, stops local mode and removes the folder.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, SocketAddrV4},
    sync::Arc,
    time::Duration,
};

use http::StatusCode;
use remora_api::ValidationSettings;
use remora_envoy::type_url::ROUTE;
use remora_local::{LocalConfig, Running};
use remora_model::{config::Addressing, input::ObjectKey};
use remora_xds::{SyncRegistry, sync::SyncState};
use tokio::{task::JoinSet, time::Instant};

use crate::{
    FleetError,
    envoy::{Envoy, EnvoyOptions},
    folder::MeshFolder,
    http::{Backend, Client},
    mesh::{ECHO_PORT, FleetMesh, VERSION_HEADER, Version},
};

/// How often a wait for the control plane's view of the proxies looks again.
const SYNC_POLL: Duration = Duration::from_millis(50);
/// How often a readiness check asks an Envoy again.
const READY_PROBE: Duration = Duration::from_millis(50);

/// What a fleet is made of.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Envoy processes, one per proxy pod.
    pub envoys: usize,
    /// Services of the synthetic mesh.
    pub services: usize,
    /// Gives every namespace an egress scope (its own namespace and the shared ones).
    pub egress: bool,
    /// The synthetic mesh's own pods carry sidecars too (no Envoy runs for them, but local
    /// mode computes and publishes their config); see [`FleetMesh::with_workload_sidecars`].
    pub workload_sidecars: bool,
    /// How the Envoys run.
    pub envoy: EnvoyOptions,
    /// How often local mode checks the folder (`remora local --poll-ms`).
    pub poll: Duration,
    /// How long every Envoy may take to get its config and route by it.
    pub startup_timeout: Duration,
}

/// A request through one Envoy to the echo Service, waiting for one backend's answer.
#[derive(Clone)]
pub struct Probe {
    /// The echo Service's host name.
    pub host: Arc<str>,
    /// A header that picks a rule of the route, if any.
    pub header: Option<(&'static str, &'static str)>,
    /// The backend whose answer ends the wait.
    pub want: Arc<str>,
    /// The backend whose answer is expected until then (during a change: the old one).
    pub before: Option<Arc<str>>,
    /// The pause between requests.
    pub every: Duration,
    /// When to give up.
    pub deadline: Instant,
}

/// What one Envoy answered while a [`Probe`] waited.
pub struct Probed {
    /// Which Envoy of the fleet.
    pub index: usize,
    /// When the wanted answer came, or the last answer seen before the deadline.
    pub outcome: Result<Instant, String>,
    /// Answers that were neither the wanted backend's nor the one before it (or no answer).
    pub unexpected: u32,
}

/// A running fleet.
pub struct Fleet {
    // Dropped in this order: the Envoys die before the control plane stops, and the folder
    // (which holds their logs) goes last.
    envoys: Vec<Envoy>,
    clients: Vec<Option<Client>>,
    local: Running,
    backends: Vec<Backend>,
    mesh: FleetMesh,
    folder: MeshFolder,
    current: Version,
}

impl Fleet {
    /// Starts the fleet and waits, within `options.startup_timeout`, until every Envoy
    /// routes and local mode has every proxy's ACKs (so what follows starts from a quiet
    /// control plane); returns it with the time until every Envoy routed.
    pub async fn start_synced(options: &FleetOptions) -> Result<(Fleet, Duration), FleetError> {
        let started = Instant::now();
        let mut fleet = Fleet::start(options).await?;
        let deadline = started + options.startup_timeout;
        fleet.wait_ready(deadline).await?;
        let ready_after = started.elapsed();
        fleet.wait_synced(deadline).await?;
        Ok((fleet, ready_after))
    }

    /// Writes the folder, starts the echo backends and local mode, then the Envoys; returns
    /// without waiting for them (see [`Fleet::wait_ready`]).
    pub async fn start(options: &FleetOptions) -> Result<Fleet, FleetError> {
        let mesh = FleetMesh::new(options.services, options.egress, options.envoys)
            .with_workload_sidecars(options.workload_sidecars);
        let current = Version::V1;
        let folder = MeshFolder::create(&mesh.objects(), &mesh.route(current))?;
        let mut backends = Vec::new();
        for v in [Version::V1, Version::V2] {
            backends.push(Backend::start(v.backend_addr(), &v.backend()).await?);
        }
        let local = remora_local::start(LocalConfig {
            dir: folder.dir(),
            xds_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            poll: options.poll,
            debounce: remora_local::DEFAULT_DEBOUNCE,
            addressing: Addressing::Explicit,
            validation: ValidationSettings::default(),
        })
        .await?;
        let envoys = (0..options.envoys)
            .map(|i| {
                let dir = folder.root().join(format!("envoy-{i}"));
                Envoy::spawn(mesh.proxy(i), local.xds_addr, dir, &options.envoy)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let clients = (0..options.envoys)
            .map(|i| {
                let addr = SocketAddrV4::new(FleetMesh::proxy_ip(i), ECHO_PORT);
                Some(Client::new(addr.into()))
            })
            .collect();
        Ok(Fleet {
            envoys,
            clients,
            local,
            backends,
            mesh,
            folder,
            current,
        })
    }

    /// Kills the Envoys, then stops local mode and the backends, and returns once their
    /// addresses are free for the next fleet. (Dropping a fleet stops it too, without
    /// waiting.)
    pub async fn stop(self) {
        let Fleet {
            envoys,
            local,
            backends,
            ..
        } = self;
        drop(envoys);
        local.stop().await;
        for b in backends {
            b.stop().await;
        }
    }

    /// The mesh the fleet runs.
    pub fn mesh(&self) -> &FleetMesh {
        &self.mesh
    }

    /// The Envoys, in the order of the proxies.
    pub fn envoys_mut(&mut self) -> &mut [Envoy] {
        &mut self.envoys
    }

    /// What each proxy was sent and ACKed, as local mode sees it.
    pub fn status(&self) -> Arc<SyncRegistry> {
        self.local.status.clone()
    }

    /// The route configs local mode serves `proxy` now, by name: their versions and
    /// encoded sizes.
    pub fn route_configs(&self, proxy: &ObjectKey) -> BTreeMap<String, (String, usize)> {
        let Some(snapshot) = self.local.cache.get(proxy) else {
            return BTreeMap::new();
        };
        snapshot
            .of_type(ROUTE)
            .map(|(name, r)| (name.clone(), (r.version.clone(), r.any.value.len())))
            .collect()
    }

    /// The subset the echo route's default rule sends to now.
    pub fn current(&self) -> Version {
        self.current
    }

    /// Waits until every Envoy routes by the echo route as it stands: each pinned rule to
    /// its subset, then the default rule to the current one. An Envoy that exits or does
    /// not get there by `deadline` is an error.
    pub async fn wait_ready(&mut self, deadline: Instant) -> Result<(), FleetError> {
        let pinned = [Version::V1, Version::V2].map(|v| (Some((VERSION_HEADER, v.label())), v));
        let default = (None, self.current);
        for (header, want) in pinned.into_iter().chain([default]) {
            let probe = Probe {
                host: self.mesh.echo_host().into(),
                header,
                want: want.backend().into(),
                before: None,
                every: READY_PROBE,
                deadline,
            };
            for p in self.probe_all(&probe).await {
                if let Err(last) = p.outcome {
                    self.check_running()?;
                    return Err(FleetError::Timeout {
                        waiting: format!(
                            "the Envoy of {} to route to {} ({})",
                            self.mesh.proxy(p.index),
                            want.backend(),
                            header.map_or("the default rule".into(), |(h, v)| format!("{h}: {v}")),
                        ),
                        detail: format!(
                            "its last answer: {last}; its log ends with:\n{}",
                            self.envoys[p.index].log_tail()
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Waits until local mode reports every proxy synced on all four types.
    pub async fn wait_synced(&mut self, deadline: Instant) -> Result<(), FleetError> {
        let proxies: Vec<ObjectKey> = (0..self.envoys.len()).map(|i| self.mesh.proxy(i)).collect();
        loop {
            let behind: Vec<&ObjectKey> = proxies
                .iter()
                .filter(|p| !synced(&self.local.status, p))
                .collect();
            let Some(first) = behind.first() else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(FleetError::Timeout {
                    waiting: "every proxy to ACK its whole config".into(),
                    detail: format!(
                        "{} not synced, e.g. {first}: {:?}",
                        behind.len(),
                        self.local.status.get(first)
                    ),
                });
            }
            self.check_running()?;
            tokio::time::sleep(SYNC_POLL).await;
        }
    }

    /// Replaces the echo route's file with the default rule switched to the other subset,
    /// and returns when it was written.
    pub fn switch_route(&mut self) -> Result<Instant, FleetError> {
        let next = self.current.other();
        let written = Instant::now();
        self.folder.write_route(&self.mesh.route(next))?;
        self.current = next;
        Ok(written)
    }

    /// Sends `probe` through every Envoy at once; one result per Envoy, in order.
    pub async fn probe_all(&mut self, probe: &Probe) -> Vec<Probed> {
        let mut set = JoinSet::new();
        for (index, client) in self.clients.iter_mut().enumerate() {
            if let Some(client) = client.take() {
                set.spawn(probe_one(index, client, probe.clone()));
            }
        }
        let mut out = Vec::with_capacity(self.clients.len());
        // Each client comes back for the next probe, its connection still open.
        for (client, probed) in set.join_all().await {
            self.clients[probed.index] = Some(client);
            out.push(probed);
        }
        out.sort_by_key(|p| p.index);
        out
    }

    /// The CPU time every Envoy has used so far, together.
    pub fn envoy_cpu(&self) -> Duration {
        self.envoys
            .iter()
            .filter_map(|e| e.process().cpu_time())
            .sum()
    }

    /// How long reading the folder takes (what local mode does on every change it sees),
    /// measured once on a blocking thread.
    pub async fn time_folder_read(&self) -> Result<Duration, FleetError> {
        let dir = self.folder.dir();
        let read = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            remora_inputs::load_dir(&dir).map(|_| started.elapsed())
        })
        .await;
        match read {
            Ok(Ok(took)) => Ok(took),
            Ok(Err(e)) => Err(FleetError::Io {
                what: "read the mesh folder".into(),
                source: std::io::Error::other(e),
            }),
            Err(e) => Err(FleetError::Io {
                what: "time the read of the mesh folder".into(),
                source: std::io::Error::other(e),
            }),
        }
    }

    /// An error naming the first Envoy that has exited, if any.
    pub fn check_running(&mut self) -> Result<(), FleetError> {
        self.envoys.iter_mut().try_for_each(Envoy::check_running)
    }
}

fn synced(status: &SyncRegistry, proxy: &ObjectKey) -> bool {
    status.get(proxy).is_some_and(|s| {
        s.types.len() == 4 && s.types.values().all(|t| t.state() == SyncState::Synced)
    })
}

async fn probe_one(index: usize, mut client: Client, probe: Probe) -> (Client, Probed) {
    let mut unexpected = 0;
    loop {
        let last = match client.get(&probe.host, "/", probe.header).await {
            Ok(a) if a.status == StatusCode::OK && *a.body == *probe.want => {
                let probed = Probed {
                    index,
                    outcome: Ok(Instant::now()),
                    unexpected,
                };
                return (client, probed);
            }
            Ok(a) => {
                let expected = a.status == StatusCode::OK
                    && probe.before.as_deref().is_some_and(|b| b == a.body);
                unexpected += u32::from(!expected);
                format!("{} {:?}", a.status, a.body)
            }
            Err(e) => {
                unexpected += 1;
                e.to_string()
            }
        };
        if Instant::now() + probe.every > probe.deadline {
            let probed = Probed {
                index,
                outcome: Err(last),
                unexpected,
            };
            return (client, probed);
        }
        tokio::time::sleep(probe.every).await;
    }
}
