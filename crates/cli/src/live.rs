//! The live cluster's objects for `remora analyze` and `remora diff`: everything the
//! controller watches, listed once and converted the same way, so they see what the control
//! plane sees.

use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};
use remora_api::{AccessPolicy, SidecarPolicy, TrafficRoute};
use remora_controller::{
    endpoints::EndpointApi,
    gateway::{GRPC_ROUTE, HTTP_ROUTE, REFERENCE_GRANT},
};
use remora_inputs::convert::{self, Unusable};
use remora_model::input::Object;
use serde::de::DeserializeOwned;

use crate::cluster::ClusterArgs;

/// What the cluster holds: the objects the model takes, and those it cannot.
pub fn read_cluster(cluster: &ClusterArgs) -> Result<Read, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = cluster.connect().await?.client;
        read(&client).await
    })
}

/// The objects, and those the model cannot take with why.
pub type Read = (Vec<Object>, Vec<Unusable>);

async fn read(client: &Client) -> Result<Read, String> {
    let mut read = (Vec::new(), Vec::new());
    list(client, &mut read, |n: &Namespace| {
        convert::namespace(n).map(|o| vec![o])
    })
    .await?;
    list(client, &mut read, |s: &Service| {
        convert::service(s).map(|o| vec![o])
    })
    .await?;
    list(client, &mut read, |p: &Pod| {
        convert::pod(p).map(|o| vec![o])
    })
    .await?;
    list(client, &mut read, |p: &SidecarPolicy| {
        Ok(vec![Object::SidecarPolicy(Box::new(p.clone()))])
    })
    .await?;
    list(client, &mut read, |r: &TrafficRoute| {
        Ok(vec![Object::TrafficRoute(Box::new(r.clone()))])
    })
    .await?;
    list(client, &mut read, |a: &AccessPolicy| {
        Ok(vec![Object::AccessPolicy(Box::new(a.clone()))])
    })
    .await?;
    endpoints(client, &mut read).await?;
    for kind in [REFERENCE_GRANT, HTTP_ROUTE, GRPC_ROUTE] {
        // Gateway API is optional: a kind the server does not serve has no objects.
        if let Some(version) = kind.served(client).await {
            let api = Api::<DynamicObject>::all_with(client.clone(), &kind.resource(version));
            let items = all(&api, kind.plural).await?;
            take(&mut read, items.iter().map(|o| kind.objects(o)));
        }
    }
    Ok(read)
}

/// Every Service's endpoints, from the newest API the server serves (as the controller).
async fn endpoints(client: &Client, read: &mut Read) -> Result<(), String> {
    match EndpointApi::discover(client).await {
        EndpointApi::SlicesV1 => {
            list(client, read, |s: &EndpointSlice| {
                convert::endpoint_slice(s).map(|o| vec![o])
            })
            .await
        }
        EndpointApi::SlicesV1beta1 => {
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("discovery.k8s.io", "v1beta1", "EndpointSlice"),
                "endpointslices",
            );
            let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
            let slices = all(&api, "endpointslices").await?;
            take(
                read,
                slices.iter().map(|s| {
                    let json = serde_json::to_value(s).unwrap_or_default();
                    convert::endpoint_slice_v1beta1(&json).map(|o| vec![o])
                }),
            );
            Ok(())
        }
        EndpointApi::Endpoints => list(client, read, convert::endpoints).await,
    }
}

/// Lists every object of `K` in the cluster and converts it.
async fn list<K>(
    client: &Client,
    read: &mut Read,
    convert: impl Fn(&K) -> Result<Vec<Object>, Unusable>,
) -> Result<(), String>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api = Api::<K>::all(client.clone());
    let items = all(&api, &K::plural(&())).await?;
    take(read, items.iter().map(convert));
    Ok(())
}

async fn all<K>(api: &Api<K>, plural: &str) -> Result<Vec<K>, String>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| format!("listing {plural}: {e}"))
}

fn take(read: &mut Read, converted: impl Iterator<Item = Result<Vec<Object>, Unusable>>) {
    for c in converted {
        match c {
            Ok(objects) => read.0.extend(objects),
            Err(u) => read.1.push(u),
        }
    }
}
