//! The secrets a sidecar's Envoy takes over SDS from the identity agent in its pod, and where
//! it finds the agent: the one definition both sides (this crate's translation and bootstrap,
//! the agent that serves them) use.

/// The static cluster, in every meshed proxy's bootstrap, that reaches the agent's SDS server.
pub const SDS_CLUSTER: &str = "remora-sds";
/// The folder (an `emptyDir` shared by the agent and the proxy) holding the agent's socket.
pub const SDS_DIR: &str = "/var/run/remora/sds";
/// The Unix socket the agent serves SDS on, in [`SDS_DIR`].
pub const SDS_SOCKET: &str = "/var/run/remora/sds/socket";
/// The secret holding the workload's certificate chain and private key.
pub const WORKLOAD_SECRET: &str = "default";
/// The secret holding the trust bundle: the mesh roots a peer's certificate must chain to.
pub const TRUST_BUNDLE_SECRET: &str = "ROOTCA";
