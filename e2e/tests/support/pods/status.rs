//! A running pod's status as the kubelet reports it: each container's state (from its
//! process) and readiness (from its probes), the pod's phase and conditions; written through
//! the status subresource whenever it changes.

use std::{
    process::Child,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Container, Pod, Probe},
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use super::{Made, START_LIMIT, container, lock};

pub struct Status {
    pub pod_ip: String,
    pub initialized: bool,
    start_time: String,
    init: Vec<Entry>,
    containers: Vec<Entry>,
    published: Option<Value>,
}

struct Entry {
    name: String,
    image: String,
    /// A native sidecar: an init container that keeps running and counts for readiness.
    sidecar: bool,
    state: State,
    ready: bool,
    readiness: Option<Prober>,
}

enum State {
    Waiting,
    Running {
        since: String,
    },
    Terminated {
        code: Option<i32>,
        since: String,
        at: String,
    },
}

/// A readiness probe's schedule and its consecutive results.
struct Prober {
    probe: Probe,
    container: Container,
    next: Instant,
    successes: i32,
    failures: i32,
}

fn now() -> String {
    Timestamp::from_second(Timestamp::now().as_second())
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

fn secs(n: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(n.unwrap_or(default).max(0) as u64)
}

impl Entry {
    fn new(c: &Container, init: bool) -> Entry {
        let sidecar = init && c.restart_policy.as_deref() == Some("Always");
        let readiness = c.readiness_probe.clone().filter(|_| !init || sidecar);
        Entry {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            sidecar,
            state: State::Waiting,
            ready: false,
            readiness: readiness.map(|probe| Prober {
                probe,
                container: c.clone(),
                next: Instant::now(),
                successes: 0,
                failures: 0,
            }),
        }
    }

    fn to_json(&self) -> Value {
        let state = match &self.state {
            State::Waiting => json!({"waiting": {"reason": "PodInitializing"}}),
            State::Running { since } => json!({"running": {"startedAt": since}}),
            State::Terminated { code, since, at } => json!({"terminated": {
                "exitCode": code.unwrap_or(-1),
                "reason": if *code == Some(0) { "Completed" } else { "Error" },
                "startedAt": since, "finishedAt": at,
            }}),
        };
        json!({
            "name": self.name, "image": self.image, "imageID": "", "restartCount": 0,
            "ready": self.ready, "started": matches!(self.state, State::Running { .. }),
            "state": state,
        })
    }
}

impl Status {
    pub fn new(pod: &Pod) -> Status {
        let spec = pod.spec.as_ref();
        let init = spec.and_then(|s| s.init_containers.as_ref());
        Status {
            pod_ip: String::new(),
            initialized: false,
            start_time: now(),
            init: init
                .into_iter()
                .flatten()
                .map(|c| Entry::new(c, true))
                .collect(),
            containers: spec
                .into_iter()
                .flat_map(|s| &s.containers)
                .map(|c| Entry::new(c, false))
                .collect(),
            published: None,
        }
    }

    fn entry(&mut self, name: &str) -> Option<&mut Entry> {
        self.init
            .iter_mut()
            .chain(&mut self.containers)
            .find(|e| e.name == name)
    }

    /// The container's process has started; without a readiness probe it is ready.
    pub fn started(&mut self, name: &str) {
        if let Some(e) = self.entry(name) {
            e.state = State::Running { since: now() };
            e.ready = e.readiness.is_none();
            if let Some(p) = &mut e.readiness {
                p.next = Instant::now() + secs(p.probe.initial_delay_seconds, 0);
            }
        }
    }

    /// Marks the containers whose process exited.
    pub fn refresh(&mut self, procs: &mut [(String, Child)]) {
        for e in self.init.iter_mut().chain(&mut self.containers) {
            let State::Running { since } = &e.state else {
                continue;
            };
            let child = procs.iter_mut().rev().find(|(n, _)| *n == e.name);
            if let Some((_, child)) = child
                && let Ok(Some(exit)) = child.try_wait()
            {
                let since = since.clone();
                e.state = State::Terminated {
                    code: exit.code(),
                    since,
                    at: now(),
                };
                e.ready = false;
            }
        }
    }

    /// Runs the readiness probes that are due.
    pub async fn probe(&mut self) {
        let ip = self.pod_ip.clone();
        for e in self.init.iter_mut().chain(&mut self.containers) {
            let running = matches!(e.state, State::Running { .. });
            let Some(p) = e
                .readiness
                .as_mut()
                .filter(|p| running && p.next <= Instant::now())
            else {
                continue;
            };
            p.next = Instant::now() + secs(p.probe.period_seconds, 10).max(Duration::from_secs(1));
            if container::probe(&p.probe, &p.container, &ip).await {
                (p.successes, p.failures) = (p.successes + 1, 0);
                e.ready |= p.successes >= p.probe.success_threshold.unwrap_or(1);
            } else {
                (p.successes, p.failures) = (0, p.failures + 1);
                e.ready &= p.failures < p.probe.failure_threshold.unwrap_or(3);
            }
        }
    }

    /// Holds a native sidecar until its startup probe passes, as the kubelet holds the next
    /// init container: at most `failureThreshold` failures and [`START_LIMIT`].
    pub async fn startup(&mut self, c: &Container, made: &Mutex<Made>) -> Result<(), String> {
        let Some(p) = &c.startup_probe else {
            return Ok(());
        };
        tokio::time::sleep(secs(p.initial_delay_seconds, 0)).await;
        let period = secs(p.period_seconds, 10).max(Duration::from_secs(1));
        let deadline = Instant::now() + START_LIMIT;
        let mut failures = 0;
        while Instant::now() < deadline {
            if container::probe(p, c, &self.pod_ip).await {
                return Ok(());
            }
            failures += 1;
            if failures >= p.failure_threshold.unwrap_or(3) {
                return Err(format!(
                    "startup probe of {} failed {failures} times",
                    c.name
                ));
            }
            self.refresh(&mut lock(made).procs);
            if self
                .entry(&c.name)
                .is_some_and(|e| matches!(e.state, State::Terminated { .. }))
            {
                return Err(format!("sidecar {} exited before it started", c.name));
            }
            tokio::time::sleep(period).await;
        }
        Err(format!(
            "startup probe of {} did not pass within {START_LIMIT:?}",
            c.name
        ))
    }

    fn to_json(&self) -> Value {
        let all_started = self
            .containers
            .iter()
            .all(|e| !matches!(e.state, State::Waiting));
        let running = self
            .containers
            .iter()
            .any(|e| matches!(e.state, State::Running { .. }));
        let phase = if self.initialized && all_started && running {
            "Running"
        } else {
            "Pending"
        };
        let containers_ready = self.initialized
            && self.containers.iter().all(|e| e.ready)
            && self.init.iter().filter(|e| e.sidecar).all(|e| e.ready);
        let at = self.start_time.clone();
        let condition = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": at});
        json!({"status": {
            "phase": phase, "hostIP": "127.0.0.1",
            "podIP": self.pod_ip, "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            "conditions": [
                condition("PodScheduled", true),
                condition("Initialized", self.initialized),
                condition("ContainersReady", containers_ready),
                condition("Ready", containers_ready),
            ],
            "initContainerStatuses": self.init.iter().map(Entry::to_json).collect::<Vec<_>>(),
            "containerStatuses": self.containers.iter().map(Entry::to_json).collect::<Vec<_>>(),
        }})
    }

    /// Writes the status when it changed since the last write that succeeded.
    pub async fn publish(&mut self, pods: &Api<Pod>, name: &str) {
        let status = self.to_json();
        if self.published.as_ref() == Some(&status) {
            return;
        }
        let patched = pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await;
        if patched.is_ok() {
            self.published = Some(status);
        }
    }
}
