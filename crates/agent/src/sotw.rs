//! One SDS stream in state-of-the-world mode, with no I/O: what to answer to a request from
//! Envoy and to a change of the secrets. Envoy names the secrets it wants; the stream sends
//! every one of them the agent has, and nothing while it has none of them (Envoy takes an
//! empty answer for a missing secret and rejects it), then again each time one of them
//! changes.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use crate::secrets::{Secrets, secret_type_url};

/// The state of one stream.
#[derive(Debug, Default)]
pub struct SotwStream {
    /// What Envoy asked for last.
    names: BTreeSet<String>,
    /// The version of each secret in the last response.
    sent: BTreeMap<String, u64>,
    /// The nonce of the last response; a request naming another is stale.
    nonce: Option<String>,
    responses: u64,
}

impl SotwStream {
    /// The answer to `request`, given the `secrets` now.
    pub fn on_request(
        &mut self,
        request: &DiscoveryRequest,
        secrets: &Secrets,
    ) -> Option<DiscoveryResponse> {
        let answers = &request.response_nonce;
        if !answers.is_empty() && Some(answers) != self.nonce.as_ref() {
            // A reply to a response that a newer one has overtaken: Envoy will reply to
            // that one too, so this says nothing current.
            tracing::debug!(nonce = %answers, "ignored a stale SDS request");
            return None;
        }
        match &request.error_detail {
            Some(error) => tracing::warn!(
                secrets = ?request.resource_names,
                rejected_nonce = %answers,
                kept_version = %request.version_info,
                message = %error.message,
                "Envoy rejected secrets (NACK)"
            ),
            None if !answers.is_empty() => tracing::debug!(
                secrets = ?request.resource_names,
                version = %request.version_info,
                "Envoy accepted secrets (ACK)"
            ),
            None => tracing::debug!(secrets = ?request.resource_names, "Envoy asked for secrets"),
        }
        self.names = request.resource_names.iter().cloned().collect();
        self.sent.retain(|name, _| self.names.contains(name));
        self.respond(secrets)
    }

    /// What to push now that the secrets are `secrets`.
    pub fn on_update(&mut self, secrets: &Secrets) -> Option<DiscoveryResponse> {
        self.respond(secrets)
    }

    /// Every requested secret there is, when that differs from what was sent.
    fn respond(&mut self, secrets: &Secrets) -> Option<DiscoveryResponse> {
        let have: BTreeMap<String, u64> = self
            .names
            .iter()
            .filter_map(|name| secrets.get(name).map(|r| (name.clone(), r.version)))
            .collect();
        if have.is_empty() || have == self.sent {
            return None;
        }
        let resources = have
            .keys()
            .filter_map(|name| secrets.get(name).map(|r| r.any.clone()))
            .collect();
        self.responses += 1;
        let nonce = self.responses.to_string();
        self.nonce = Some(nonce.clone());
        self.sent = have;
        Some(DiscoveryResponse {
            version_info: secrets.version().to_string(),
            resources,
            type_url: secret_type_url(),
            nonce,
            ..DiscoveryResponse::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::rpc::Status;
    use remora_envoy::sds::{TRUST_BUNDLE_SECRET, WORKLOAD_SECRET};

    use super::*;
    use crate::secrets::Publisher;

    fn request(names: &[&str], answers: Option<&DiscoveryResponse>) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            type_url: secret_type_url(),
            version_info: answers.map(|r| r.version_info.clone()).unwrap_or_default(),
            response_nonce: answers.map(|r| r.nonce.clone()).unwrap_or_default(),
            ..DiscoveryRequest::default()
        }
    }

    fn nack(names: &[&str], answers: &DiscoveryResponse) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: String::new(),
            error_detail: Some(Status {
                code: 3,
                message: "bad certificate".into(),
                ..Status::default()
            }),
            ..request(names, Some(answers))
        }
    }

    fn secrets_with(publisher: &Publisher) -> Secrets {
        Secrets::clone(&publisher.subscribe().borrow())
    }

    #[test]
    fn a_request_gets_the_named_secrets_it_has() {
        let (publisher, _rx) = Publisher::new();
        publisher.publish_certificate("CHAIN", "KEY");
        publisher.publish_bundle("ROOTS");
        let secrets = secrets_with(&publisher);
        let mut stream = SotwStream::default();
        let response = stream
            .on_request(&request(&[WORKLOAD_SECRET], None), &secrets)
            .expect("an answer");
        assert_eq!(response.resources.len(), 1);
        assert_eq!(response.version_info, secrets.version().to_string());
        assert_eq!(response.type_url, secret_type_url());
        let both = stream
            .on_request(
                &request(&[WORKLOAD_SECRET, TRUST_BUNDLE_SECRET], Some(&response)),
                &secrets,
            )
            .expect("a second name is answered");
        assert_eq!(both.resources.len(), 2);
        assert_ne!(both.nonce, response.nonce);
    }

    #[test]
    fn a_secret_not_there_yet_is_held_until_it_is() {
        let (publisher, _rx) = Publisher::new();
        let mut stream = SotwStream::default();
        let none = stream.on_request(
            &request(&[WORKLOAD_SECRET], None),
            &secrets_with(&publisher),
        );
        assert!(none.is_none());
        publisher.publish_bundle("ROOTS");
        assert!(
            stream.on_update(&secrets_with(&publisher)).is_none(),
            "another secret is no answer"
        );
        publisher.publish_certificate("CHAIN", "KEY");
        let response = stream
            .on_update(&secrets_with(&publisher))
            .expect("now it is there");
        assert_eq!(response.resources.len(), 1);
    }

    #[test]
    fn an_ack_gets_nothing_and_a_change_is_pushed() {
        let (publisher, _rx) = Publisher::new();
        publisher.publish_certificate("CHAIN", "KEY");
        let mut stream = SotwStream::default();
        let first = stream
            .on_request(
                &request(&[WORKLOAD_SECRET], None),
                &secrets_with(&publisher),
            )
            .expect("an answer");
        let ack = request(&[WORKLOAD_SECRET], Some(&first));
        assert!(stream.on_request(&ack, &secrets_with(&publisher)).is_none());
        publisher.publish_bundle("ROOTS");
        assert!(
            stream.on_update(&secrets_with(&publisher)).is_none(),
            "a secret it did not ask for"
        );
        publisher.publish_certificate("CHAIN2", "KEY2");
        let pushed = stream.on_update(&secrets_with(&publisher)).expect("a push");
        assert_ne!(pushed.version_info, first.version_info);
        assert_ne!(pushed.resources, first.resources);
    }

    #[test]
    fn a_nack_is_not_answered_with_the_same_secrets_again() {
        let (publisher, _rx) = Publisher::new();
        publisher.publish_certificate("CHAIN", "KEY");
        let mut stream = SotwStream::default();
        let first = stream
            .on_request(
                &request(&[WORKLOAD_SECRET], None),
                &secrets_with(&publisher),
            )
            .expect("an answer");
        let rejected = nack(&[WORKLOAD_SECRET], &first);
        assert!(
            stream
                .on_request(&rejected, &secrets_with(&publisher))
                .is_none()
        );
        publisher.publish_certificate("CHAIN2", "KEY2");
        assert!(
            stream.on_update(&secrets_with(&publisher)).is_some(),
            "a fix is pushed"
        );
    }

    #[test]
    fn a_request_answering_an_old_response_is_ignored() {
        let (publisher, _rx) = Publisher::new();
        publisher.publish_certificate("CHAIN", "KEY");
        let mut stream = SotwStream::default();
        let first = stream
            .on_request(
                &request(&[WORKLOAD_SECRET], None),
                &secrets_with(&publisher),
            )
            .expect("an answer");
        publisher.publish_certificate("CHAIN2", "KEY2");
        let second = stream.on_update(&secrets_with(&publisher)).expect("a push");
        publisher.publish_bundle("ROOTS");
        // Still answering `first`, and asking for the bundle too: stale, so ignored.
        let stale = request(&[WORKLOAD_SECRET, TRUST_BUNDLE_SECRET], Some(&first));
        assert!(
            stream
                .on_request(&stale, &secrets_with(&publisher))
                .is_none()
        );
        let current = request(&[WORKLOAD_SECRET, TRUST_BUNDLE_SECRET], Some(&second));
        let both = stream
            .on_request(&current, &secrets_with(&publisher))
            .expect("the current request is answered");
        assert_eq!(both.resources.len(), 2);
    }

    #[test]
    fn dropping_a_name_and_asking_again_sends_it_again() {
        let (publisher, _rx) = Publisher::new();
        publisher.publish_certificate("CHAIN", "KEY");
        publisher.publish_bundle("ROOTS");
        let secrets = secrets_with(&publisher);
        let mut stream = SotwStream::default();
        let both = stream
            .on_request(
                &request(&[WORKLOAD_SECRET, TRUST_BUNDLE_SECRET], None),
                &secrets,
            )
            .expect("an answer");
        let fewer = request(&[WORKLOAD_SECRET], Some(&both));
        assert!(stream.on_request(&fewer, &secrets).is_none(), "nothing new");
        let again = request(&[WORKLOAD_SECRET, TRUST_BUNDLE_SECRET], Some(&both));
        let resent = stream
            .on_request(&again, &secrets)
            .expect("the bundle again");
        assert_eq!(resent.resources.len(), 2);
    }
}
