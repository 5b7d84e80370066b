//! A meshed namespace with pods that run for real: the test's objects created in the order a
//! cluster needs them (policies before the injecting controller, then Services, routes and
//! Deployments), every pod Ready, and all of it torn down by [`Scene::stop`].

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Service, ServiceAccount},
};
use kube::Client;
use remora_api::{SidecarPolicy, TrafficRoute};
use serde_json::Value;

use super::{
    apps::{cluster_health, create, ready_pods},
    eventually, meshed,
    pods::{Runner, container::Images, net::Bridge},
};

/// The objects of a scene.
#[derive(Default)]
pub struct Objects {
    pub policies: Vec<Value>,
    pub services: Vec<Value>,
    pub routes: Vec<Value>,
    /// The service accounts the Deployments' pods run as (besides `default`).
    pub service_accounts: Vec<Value>,
    pub deployments: Vec<Value>,
}

/// How the scene's control plane runs.
pub struct Options {
    /// The proxies speak delta xDS.
    pub delta: bool,
    /// Labels of a pod some policy governs (the controller is ready once it injects one).
    pub probe_labels: Value,
    /// Workload identities, with this certificate lifetime.
    pub identity: Option<Duration>,
}

pub struct Scene {
    pub client: Client,
    pub ns: String,
    pub webhook: String,
    pub controller: remora_controller::Controller,
    pub runner: Runner,
    pub bridge: Arc<Bridge>,
    /// Deployment → (pod name, pod IP).
    pub pods: BTreeMap<String, (String, String)>,
}

impl Scene {
    /// The scene of `objects` (made knowing the bridge), or `None` without a cluster.
    pub async fn start(
        prefix: &str,
        options: Options,
        objects: impl FnOnce(&Bridge) -> Objects,
    ) -> Option<Scene> {
        let client = super::cluster::client().await?;
        let bridge = Arc::new(Bridge::create());
        let ns = meshed::namespace(&client, prefix).await;
        let webhook = format!("remora-e2e-{ns}");
        let objects = objects(&bridge);
        // A pod is injected only under a policy: the policies come first.
        create::<SidecarPolicy>(&client, &ns, objects.policies).await;
        let controller = meshed::controller(
            &client,
            &ns,
            &webhook,
            &bridge,
            options.delta,
            options.probe_labels,
            options.identity,
        )
        .await;
        let runner = Runner::start(&client, &ns, &bridge, Images::standard());
        create::<Service>(&client, &ns, objects.services).await;
        create::<TrafficRoute>(&client, &ns, objects.routes).await;
        create::<ServiceAccount>(&client, &ns, objects.service_accounts).await;
        let count = objects.deployments.len();
        create::<Deployment>(&client, &ns, objects.deployments).await;
        let pods = ready_pods(&client, &ns, count).await;
        assert_eq!(runner.failures(), Vec::<String>::new());
        Some(Scene {
            client,
            ns,
            webhook,
            controller,
            runner,
            bridge,
            pods,
        })
    }

    /// The network namespace of the Deployment's pod.
    pub fn netns(&self, deployment: &str) -> String {
        self.runner
            .netns(self.pod(deployment))
            .unwrap_or_else(|| panic!("{deployment} runs"))
    }

    /// The name of the Deployment's pod.
    pub fn pod(&self, deployment: &str) -> &str {
        &self.pods[deployment].0
    }

    /// The address of the Deployment's pod.
    pub fn ip(&self, deployment: &str) -> &str {
        &self.pods[deployment].1
    }

    /// What the proxy of the Deployment's pod logged.
    pub fn proxy_log(&self, deployment: &str) -> String {
        self.runner.log(self.pod(deployment), meshed::PROXY)
    }

    /// Waits until the proxy of `deployment` has a healthy endpoint in every cluster of each
    /// of `services`: a pod turns Ready before its address reaches the proxies.
    pub async fn await_endpoints(&self, deployment: &str, services: &[&str]) {
        let netns = self.netns(deployment);
        for service in services {
            let fqdn = format!("{service}.{}.svc.cluster.local", self.ns);
            eventually(60, "the endpoints to reach the proxy", async || {
                let clusters = cluster_health(&netns, &fqdn).await;
                (!clusters.is_empty() && clusters.values().all(|h| *h)).then_some(())
            })
            .await;
        }
    }

    pub async fn stop(self) {
        meshed::cleanup(&self.client, &self.webhook, self.controller, &self.ns).await;
        drop(self.runner);
        drop(self.bridge);
    }
}
