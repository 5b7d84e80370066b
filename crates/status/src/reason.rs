//! Condition reasons this crate sets beyond those `remora_api::conditions::reason` names.

/// `ResolvedRefs=False`: HTTP rules on a TCP port, or TCP rules on an HTTP port.
pub const PROTOCOL_MISMATCH: &str = "ProtocolMismatch";
/// `Degraded=False`: nothing needs a person.
pub const AS_EXPECTED: &str = "AsExpected";
/// `ResolvedRefs=False` on an access policy: its selector matches no meshed pod.
pub const NOTHING_SELECTED: &str = "NothingSelected";
/// `ResolvedRefs=False` on an access policy: it names service accounts no pod runs as.
pub const UNKNOWN_SERVICE_ACCOUNTS: &str = "UnknownServiceAccounts";
