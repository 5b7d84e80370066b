//! Proxy versions: how one is read, and which ones this control plane can configure.

use std::fmt;

/// The Envoy minor versions this control plane is built and tested against (any patch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionWindow {
    /// The one major version in the window.
    pub major: u32,
    /// The oldest supported minor version, inclusive.
    pub oldest_minor: u32,
    /// The newest supported minor version, inclusive.
    pub newest_minor: u32,
}

impl VersionWindow {
    /// Whether `major.minor` (any patch) falls in the window.
    pub fn contains(&self, major: u32, minor: u32) -> bool {
        major == self.major && (self.oldest_minor..=self.newest_minor).contains(&minor)
    }
}

impl fmt::Display for VersionWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{major}.{} through {major}.{}",
            self.oldest_minor,
            self.newest_minor,
            major = self.major
        )
    }
}

/// Built and tested against Envoy 1.40; the two minors before it still speak the xDS this
/// control plane sends.
pub const SUPPORTED_PROXY_VERSIONS: VersionWindow = VersionWindow {
    major: 1,
    oldest_minor: 38,
    newest_minor: 40,
};

/// Why a proxy version is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyVersionError {
    /// Not of the form MAJOR.MINOR.PATCH with an optional suffix.
    #[error(
        "{version:?} is not a version: set spec.proxy.version to MAJOR.MINOR.PATCH within \
         {SUPPORTED_PROXY_VERSIONS}, e.g. v{major}.{minor}.0",
        major = SUPPORTED_PROXY_VERSIONS.major,
        minor = SUPPORTED_PROXY_VERSIONS.newest_minor
    )]
    Unparseable {
        /// The version as written.
        version: String,
    },
    /// A well-formed version outside [`SUPPORTED_PROXY_VERSIONS`].
    #[error(
        "{version:?} is outside the Envoy versions this control plane supports \
         ({SUPPORTED_PROXY_VERSIONS}, any patch): set spec.proxy.version to one of them, \
         e.g. v{major}.{minor}.0, or upgrade the control plane first",
        major = SUPPORTED_PROXY_VERSIONS.major,
        minor = SUPPORTED_PROXY_VERSIONS.newest_minor
    )]
    Unsupported {
        /// The version as written.
        version: String,
    },
}

/// A sidecar version as people write it: `1.40.0`, `v1.39.2`, `1.40.0-rc.1`, `1.40.0+build.5`.
/// The one reading of a version string, so that what validation accepts and how the version
/// histogram in status orders versions cannot drift apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyVersion<'a> {
    /// The dot-separated numbers before any suffix, e.g. `[1, 40, 0]`.
    pub core: Vec<u64>,
    /// The pre-release after `-`, without build metadata, e.g. `rc.1`.
    pub pre: Option<&'a str>,
    /// The build metadata after `+`, e.g. `build.5`.
    pub build: Option<&'a str>,
}

impl<'a> ProxyVersion<'a> {
    /// Reads a version, ignoring a leading `v`. `None` when the part before the first `-` or
    /// `+` is not dot-separated numbers (a digest, `latest`, `1..0`).
    pub fn parse(version: &'a str) -> Option<ProxyVersion<'a>> {
        let v = version.strip_prefix('v').unwrap_or(version);
        let (v, build) = match v.split_once('+') {
            Some((v, build)) => (v, Some(build)),
            None => (v, None),
        };
        let (core, pre) = match v.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (v, None),
        };
        // `u64` parsing would take a leading `+`, but the split left none: a part counts only
        // when it is all digits.
        let core = core
            .split('.')
            .map(|n| n.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        Some(ProxyVersion { core, pre, build })
    }

    /// MAJOR.MINOR.PATCH with a suffix of letters, digits, `.`, `-` and `+` only: the form
    /// `spec.proxy.version` takes, as it doubles as an image tag.
    fn is_exact(&self) -> bool {
        let suffix_ok = [self.pre, self.build]
            .into_iter()
            .flatten()
            .flat_map(str::chars)
            .all(|c| c.is_ascii_alphanumeric() || "-+.".contains(c));
        self.core.len() == 3 && suffix_ok
    }
}

/// Accepts `1.40.0`, `v1.39.2`, `1.38.1-dev` and the like within
/// [`SUPPORTED_PROXY_VERSIONS`]: the webhook, the reconciler and the rollout all refuse a
/// sidecar this control plane cannot configure.
pub fn check_proxy_version(version: &str) -> Result<(), ProxyVersionError> {
    let major_minor = ProxyVersion::parse(version)
        .filter(ProxyVersion::is_exact)
        .and_then(|v| match v.core[..] {
            [major, minor, _] => Some((u32::try_from(major).ok()?, u32::try_from(minor).ok()?)),
            _ => None,
        });
    match major_minor {
        None => Err(ProxyVersionError::Unparseable {
            version: version.to_owned(),
        }),
        Some((major, minor)) if SUPPORTED_PROXY_VERSIONS.contains(major, minor) => Ok(()),
        Some(_) => Err(ProxyVersionError::Unsupported {
            version: version.to_owned(),
        }),
    }
}

/// Whether `v` has the form `spec.proxy.version` takes, supported or not.
pub(super) fn is_version(v: &str) -> bool {
    ProxyVersion::parse(v).is_some_and(|v| v.is_exact())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_splits_into_core_pre_release_and_build() {
        let parse = |v| ProxyVersion::parse(v).map(|p| (p.core, p.pre, p.build));
        assert_eq!(parse("v1.10.0"), Some((vec![1, 10, 0], None, None)));
        assert_eq!(
            parse("1.4.0-rc.1+b-7"),
            Some((vec![1, 4, 0], Some("rc.1"), Some("b-7")))
        );
        assert_eq!(parse("1.4+b-7"), Some((vec![1, 4], None, Some("b-7"))));
        for other in ["sha256:abc", "unknown", "", "1..0", "v"] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn versions() {
        for ok in ["1.40.0", "v1.2.3", "1.40.0-rc.1", "2.0.0+build.5"] {
            assert!(is_version(ok), "{ok}");
        }
        for bad in ["1.40", "latest", "1.40.x", "", "1..0", "1.2.3 "] {
            assert!(!is_version(bad), "{bad}");
        }
    }

    #[test]
    fn the_supported_window() {
        for ok in [
            "1.40.0",
            "v1.39.2",
            "1.38.1-dev",
            "1.40.17+build.3",
            "1.38.0",
        ] {
            assert_eq!(check_proxy_version(ok), Ok(()), "{ok}");
        }
        for out in ["1.37.9", "1.41.0", "2.40.0", "0.39.0", "v1.9.0"] {
            let e = check_proxy_version(out).expect_err(out).to_string();
            assert!(matches!(
                check_proxy_version(out),
                Err(ProxyVersionError::Unsupported { .. })
            ));
            assert!(e.contains("spec.proxy.version"), "{e}");
            assert!(e.contains("1.38 through 1.40"), "{e}");
        }
        for bad in ["latest", "1.40", "", "99999999999.40.0"] {
            assert!(check_proxy_version(bad).is_err(), "{bad}");
        }
    }
}
