//! Transparent interception: the nat rules that send a pod's TCP traffic through its proxy.
//!
//! [`Capture`] is what to intercept (built from a `SidecarPolicy`'s
//! `spec.proxy.interception` by [`Capture::new`], which validates it), [`rules::render`] turns
//! it into `iptables-restore` input for one IP family as a pure function, and [`apply`] (the
//! only I/O of the crate) programs it with an explicitly chosen iptables backend and reads it
//! back. `remora init-network` runs it in the init container that alone holds `NET_ADMIN` and
//! `NET_RAW`.
//!
//! # The path of a connection
//!
//! - **Outbound** (nat `OUTPUT`, chain `REMORA_OUTPUT`): a TCP connection the application
//!   opens is redirected to the outbound capture port (15001), where the proxy reads the
//!   original destination (`SO_ORIGINAL_DST`). Left alone, in this order: the proxy's own
//!   connections (socket owner with the proxy's UID *and* GID), loopback destinations, the
//!   pod's own addresses (anything routed through `lo`), the excluded destination ports and
//!   the excluded destination networks.
//! - **Inbound** (nat `PREROUTING`, chain `REMORA_INBOUND`): a TCP connection arriving at the
//!   pod is redirected to the inbound capture port (15006), except the proxy's own admin and
//!   readiness ports and the excluded ports; with a list of inbound ports, only those (and
//!   the two capture ports, see below).
//!
//! # Decisions
//!
//! - **The proxy-to-application hand-off.** Every connection the proxy opens is exempt by its
//!   socket owner, whatever its destination: so the inbound listener may hand a request to
//!   the application on `127.0.0.1:<port>` or on `<pod IP>:<port>`, and the proxy's
//!   upstream and xDS connections are never recaptured (no loop). Unlike Istio there is no
//!   rule that sends the proxy's own connections to its own pod IP back into the inbound
//!   listener, so no special source address (Istio's `127.0.0.6`) is needed to tell the
//!   hand-off apart from such a call. The cost: a request the proxy routes to its own pod
//!   (a Service whose endpoint is this pod) reaches the application directly, without the
//!   inbound listener's policy.
//! - **An application calling its own pod IP** goes through `lo` and is left alone, exactly
//!   like a call to `127.0.0.1`: it never leaves the pod, and capturing it would only let an
//!   outbound policy that refuses unknown destinations break applications that talk to
//!   themselves by address (common for clustered servers).
//! - **The capture ports are always captured inbound**, also with a list of inbound ports: a
//!   connection from another pod straight to `<pod IP>:15001` or `:15006` reaches the
//!   inbound listener with that port as its original destination, which the listener must
//!   refuse. Neither capture port can be excluded.
//! - **The whole nat table is restored** (not `--noflush`): a restarted init container
//!   replaces what an earlier run wrote, so a rerun gives the same table and duplicates
//!   nothing. It also removes any other nat rule in the pod's network namespace, which is the
//!   pod's own (the node's kube-proxy rules live in the node's namespace).
//! - **Backend.** The rules go through `iptables-nft-*` or `iptables-legacy-*`, chosen
//!   explicitly ([`apply::BackendChoice`]) and logged, then read back with the same backend.
//!
//! # Requirements
//!
//! The init container needs `NET_ADMIN` and `NET_RAW` and runs as root, which the `baseline`
//! and `restricted` Pod Security levels forbid: namespaces of meshed pods need `privileged`
//! (as with Istio's and Linkerd's init containers) until a CNI plugin programs these same
//! rules from the node instead (a later step). The proxy container keeps dropping every
//! capability.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apply;
mod capture;
mod cidr;
pub mod rules;

pub use capture::{Capture, CaptureError, CapturePorts, InboundPorts, ProxyUser};
pub use cidr::{Cidr, Family};
