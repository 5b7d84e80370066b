//! Who may use `remora.v1.Proxies` in a cluster: Kubernetes' RBAC, through the API server. A
//! caller proves who it is with a bearer token the API server accepts (a kubeconfig's token,
//! a ServiceAccount's) or with a client certificate of the mesh (its ServiceAccount); a
//! SubjectAccessReview then asks whether that user may `list` or `get` `proxies.remora.dev`.
//! Cluster admins may; a pod's own ServiceAccount may not, unless granted.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, UserInfo},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use remora_admin::{Access, Caller, CheckFuture, Verb};
use remora_api::GROUP;
use remora_ca::bearer;
use tonic::Status;
use tracing::debug;

/// The resource an RBAC rule names to let someone read proxies' state and config.
pub const PROXIES_RESOURCE: &str = "proxies";

/// Asks the API server who a caller is and whether it may read proxies.
#[derive(Clone)]
pub struct RbacAccess {
    client: Client,
}

impl RbacAccess {
    /// Checks with the API server `client` talks to.
    pub fn new(client: Client) -> RbacAccess {
        RbacAccess { client }
    }

    /// The user behind the call.
    async fn user(&self, caller: Caller<'_>) -> Result<UserInfo, Status> {
        if let Some(token) = bearer(caller.metadata) {
            return self.review(token).await;
        }
        match certificate_user(caller) {
            Some(user) => Ok(user),
            None => Err(Status::unauthenticated(
                "send a bearer token (metadata authorization: Bearer …) the API server accepts, \
                 or a client certificate of the mesh",
            )),
        }
    }

    async fn review(&self, token: &str) -> Result<UserInfo, Status> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Status::unavailable(format!("cannot review the token: {e}")))?;
        let status = answer.status.unwrap_or_default();
        match (status.authenticated, status.user) {
            (Some(true), Some(user)) => Ok(user),
            _ => Err(Status::unauthenticated(
                "the API server did not accept the bearer token",
            )),
        }
    }

    async fn allowed(&self, user: UserInfo, verb: Verb, namespace: &str) -> Result<(), Status> {
        let name = user.username.clone().unwrap_or_default();
        let review = subject_access_review(user, verb, namespace);
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Status::unavailable(format!("cannot check access: {e}")))?;
        let status = answer.status.unwrap_or_default();
        debug!(user = %name, verb = verb.as_str(), namespace, allowed = status.allowed, "remora.v1 access");
        if status.allowed {
            return Ok(());
        }
        let scope = if namespace.is_empty() {
            "in every namespace".to_owned()
        } else {
            format!("in namespace {namespace}")
        };
        Err(Status::permission_denied(format!(
            "{name} may not {} {PROXIES_RESOURCE}.{GROUP} {scope}; grant it with RBAC (the \
             chart's ClusterRole <release>-<namespace>-proxy-viewer)",
            verb.as_str()
        )))
    }
}

impl Access for RbacAccess {
    fn check<'a>(&'a self, caller: Caller<'a>, verb: Verb, namespace: &'a str) -> CheckFuture<'a> {
        Box::pin(async move {
            let user = self.user(caller).await?;
            self.allowed(user, verb, namespace).await
        })
    }
}

/// The ServiceAccount a mesh certificate of the caller's connection stands for.
fn certificate_user(caller: Caller<'_>) -> Option<UserInfo> {
    let identity = caller.peer?.identity.as_ref()?;
    Some(service_account_user(
        &identity.id.namespace,
        &identity.id.service_account,
    ))
}

/// The user Kubernetes sees for a ServiceAccount.
fn service_account_user(namespace: &str, account: &str) -> UserInfo {
    UserInfo {
        username: Some(format!("system:serviceaccount:{namespace}:{account}")),
        groups: Some(vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ]),
        ..UserInfo::default()
    }
}

/// May `user` do `verb` on proxies in `namespace` (empty: cluster-wide)?
fn subject_access_review(user: UserInfo, verb: Verb, namespace: &str) -> SubjectAccessReview {
    let extra = user
        .extra
        .map(|e| e.into_iter().collect::<BTreeMap<_, _>>());
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            extra,
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.into()),
                resource: Some(PROXIES_RESOURCE.into()),
                verb: Some(verb.as_str().into()),
                namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

#[cfg(test)]
mod tests {
    use remora_identity::{Peer, PeerIdentity, SpiffeId};
    use tonic::metadata::MetadataMap;

    use super::*;

    fn caller(metadata: &MetadataMap) -> Caller<'_> {
        Caller {
            metadata,
            peer: None,
        }
    }

    #[test]
    fn a_review_asks_for_the_verb_on_proxies_in_the_namespace() {
        let user = service_account_user("shop", "web");
        let review = subject_access_review(user, Verb::Get, "shop");
        let attrs = review.spec.resource_attributes.expect("attributes");
        assert_eq!(attrs.group.as_deref(), Some("remora.dev"));
        assert_eq!(attrs.resource.as_deref(), Some("proxies"));
        assert_eq!(attrs.verb.as_deref(), Some("get"));
        assert_eq!(attrs.namespace.as_deref(), Some("shop"));
        assert_eq!(
            review.spec.user.as_deref(),
            Some("system:serviceaccount:shop:web")
        );
        let everywhere = subject_access_review(UserInfo::default(), Verb::List, "");
        let attrs = everywhere.spec.resource_attributes.expect("attributes");
        assert_eq!(attrs.namespace, None);
    }

    #[test]
    fn a_mesh_certificate_stands_for_its_service_account() {
        let metadata = MetadataMap::new();
        let peer = Peer {
            remote: None,
            identity: Some(PeerIdentity {
                id: SpiffeId::new("cluster.local", "ops", "dashboard"),
                subject: Some("ops/dashboard-0".into()),
            }),
        };
        let with_cert = Caller {
            metadata: &metadata,
            peer: Some(&peer),
        };
        let user = certificate_user(with_cert).expect("a user");
        assert_eq!(
            user.username.as_deref(),
            Some("system:serviceaccount:ops:dashboard")
        );
        assert!(
            user.groups
                .expect("groups")
                .contains(&"system:serviceaccounts:ops".to_owned())
        );
        assert!(certificate_user(caller(&metadata)).is_none());
    }
}
