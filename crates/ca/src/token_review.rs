//! Tokens checked by the API server: a TokenReview for the [`TOKEN_AUDIENCE`], read into the
//! pod and service account it names, remembered in a [`ReviewCache`]. What a review's status
//! means is a plain function ([`caller_from_review`]); the API call is a thin edge.

use std::{sync::Mutex, time::Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{Api, api::PostParams};

use crate::{
    auth::{AuthError, AuthFuture, Authenticator, Caller, TOKEN_AUDIENCE},
    cache::{ReviewCache, digest},
};

/// The key of a bound token's `user.extra` that names its pod.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// What a service account's username starts with: `system:serviceaccount:<ns>:<name>`.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Verifies tokens with TokenReviews on the API server (the control plane needs `create` on
/// `tokenreviews.authentication.k8s.io`), remembering the answers.
pub struct TokenReviewAuthenticator {
    reviews: Api<TokenReview>,
    cache: Mutex<ReviewCache>,
}

impl TokenReviewAuthenticator {
    /// Reviews tokens through `client`.
    pub fn new(client: kube::Client) -> TokenReviewAuthenticator {
        TokenReviewAuthenticator {
            reviews: Api::all(client),
            cache: Mutex::new(ReviewCache::default()),
        }
    }

    async fn review(&self, token: &str) -> Result<Caller, AuthError> {
        let key = digest(token);
        if let Some(known) = self.cache().get(&key, Instant::now()) {
            return known;
        }
        let answer = self
            .reviews
            .create(&PostParams::default(), &token_review(token))
            .await;
        let outcome = match answer {
            Ok(review) => caller_from_review(&review),
            Err(e) => Err(AuthError::Unavailable(format!("TokenReview failed: {e}"))),
        };
        self.cache().insert(key, outcome.clone(), Instant::now());
        outcome
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ReviewCache> {
        // A panic while holding the lock leaves the map whole: every change is one insert.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Authenticator for TokenReviewAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(self.review(token))
    }
}

/// The TokenReview that asks whether `token` is valid for [`TOKEN_AUDIENCE`].
pub fn token_review(token: &str) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: Some(vec![TOKEN_AUDIENCE.to_owned()]),
        },
        ..TokenReview::default()
    }
}

/// The caller an answered TokenReview names: it must be authenticated, for
/// [`TOKEN_AUDIENCE`], a service account's, and bound to a pod.
pub fn caller_from_review(review: &TokenReview) -> Result<Caller, AuthError> {
    let status = review.status.as_ref().ok_or_else(|| {
        AuthError::Unavailable("the TokenReview came back without a status".into())
    })?;
    if status.authenticated != Some(true) {
        let why = status
            .error
            .clone()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "the API server did not authenticate it".into());
        return Err(AuthError::NotAuthenticated(why));
    }
    let audiences = status.audiences.clone().unwrap_or_default();
    if !audiences.iter().any(|a| a == TOKEN_AUDIENCE) {
        return Err(AuthError::WrongAudience(audiences));
    }
    let user = status.user.as_ref();
    let username = user.and_then(|u| u.username.as_deref()).unwrap_or_default();
    let (namespace, service_account) = service_account(username)
        .ok_or_else(|| AuthError::NotServiceAccount(username.to_owned()))?;
    let pod = user
        .and_then(|u| u.extra.as_ref())
        .and_then(|extra| extra.get(POD_NAME_EXTRA))
        .and_then(|names| names.first())
        .filter(|name| !name.is_empty())
        .ok_or(AuthError::NotBoundToPod)?;
    Ok(Caller {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        pod: pod.clone(),
    })
}

/// `system:serviceaccount:<namespace>:<name>` → (namespace, name).
fn service_account(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    let valid = |s: &str| !s.is_empty() && !s.contains(':');
    (valid(namespace) && valid(name)).then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    use super::*;

    fn review(status: TokenReviewStatus) -> TokenReview {
        TokenReview {
            status: Some(status),
            ..TokenReview::default()
        }
    }

    /// What the API server answers for a projected token of pod `shop/web-0`.
    fn bound_token_status() -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec![TOKEN_AUDIENCE.into()]),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:shop:reviews".into()),
                extra: Some(BTreeMap::from([
                    (POD_NAME_EXTRA.into(), vec!["web-0".into()]),
                    (
                        "authentication.kubernetes.io/pod-uid".into(),
                        vec!["0b4c".into()],
                    ),
                ])),
                ..UserInfo::default()
            }),
            error: None,
        }
    }

    #[test]
    fn the_review_asks_for_the_remora_audience() {
        let asked = token_review("t0k3n");
        assert_eq!(asked.spec.token, "t0k3n");
        assert_eq!(asked.spec.audiences, Some(vec!["remora".to_owned()]));
    }

    #[test]
    fn a_bound_token_names_its_pod_and_service_account() {
        assert_eq!(
            caller_from_review(&review(bound_token_status())),
            Ok(Caller {
                namespace: "shop".into(),
                service_account: "reviews".into(),
                pod: "web-0".into(),
            })
        );
    }

    #[test]
    fn an_unauthenticated_token_is_refused_with_the_api_servers_reason() {
        let status = TokenReviewStatus {
            authenticated: Some(false),
            error: Some("token has expired".into()),
            ..TokenReviewStatus::default()
        };
        assert_eq!(
            caller_from_review(&review(status)),
            Err(AuthError::NotAuthenticated("token has expired".into()))
        );
        let silent = TokenReviewStatus::default();
        let err = caller_from_review(&review(silent)).expect_err("not authenticated");
        assert!(matches!(err, AuthError::NotAuthenticated(ref why) if why.contains("did not")));
    }

    #[test]
    fn a_token_for_another_audience_is_refused() {
        let status = TokenReviewStatus {
            audiences: Some(vec!["https://kubernetes.default.svc".into()]),
            ..bound_token_status()
        };
        let err = caller_from_review(&review(status)).expect_err("wrong audience");
        assert_eq!(
            err,
            AuthError::WrongAudience(vec!["https://kubernetes.default.svc".into()])
        );
        assert!(err.to_string().contains("audience \"remora\""));
        let unsaid = TokenReviewStatus {
            audiences: None,
            ..bound_token_status()
        };
        assert_eq!(
            caller_from_review(&review(unsaid)),
            Err(AuthError::WrongAudience(vec![]))
        );
    }

    #[test]
    fn a_users_token_is_refused() {
        for username in [
            "alice@example.com",
            "system:serviceaccount:shop",
            "system:serviceaccount::reviews",
            "system:serviceaccount:shop:a:b",
        ] {
            let mut status = bound_token_status();
            if let Some(user) = status.user.as_mut() {
                user.username = Some(username.into());
            }
            assert_eq!(
                caller_from_review(&review(status)),
                Err(AuthError::NotServiceAccount(username.into())),
                "{username}"
            );
        }
    }

    #[test]
    fn a_token_not_bound_to_a_pod_is_refused_and_says_so() {
        let mut status = bound_token_status();
        if let Some(user) = status.user.as_mut() {
            user.extra = None;
        }
        let err = caller_from_review(&review(status)).expect_err("no pod");
        assert_eq!(err, AuthError::NotBoundToPod);
        assert!(err.to_string().contains("not bound to a pod"));
    }

    #[test]
    fn a_review_without_status_is_a_failure_to_check_not_a_refusal() {
        let err = caller_from_review(&TokenReview::default()).expect_err("no status");
        assert!(!err.is_refusal());
    }
}
