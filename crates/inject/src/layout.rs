//! Where the proxy goes in the pod, from what the API server supports.

use k8s_openapi::apimachinery::pkg::version::Info;

use crate::InjectError;

/// How the sidecars sit in the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Init containers with `restartPolicy: Always`: the kubelet starts them before the app
    /// (holding it until their startup probe passes) and stops them after it, and they do not
    /// keep a Job from completing.
    Native,
    /// Ordinary containers, the proxy first: the kubelet starts containers in order and waits
    /// for each one's postStart hook, so a hook that waits for the proxy holds the app.
    Classic,
}

impl Layout {
    /// Native sidecars are on by default from Kubernetes 1.29 (beta there, GA in 1.33). The
    /// kubelets matter too: a node older than 1.29 runs such a container as a plain init
    /// container that never ends, so a cluster whose nodes lag its API server should be given
    /// `Classic` by configuration instead.
    pub fn for_server(version: ServerVersion) -> Layout {
        if (version.major, version.minor) >= (1, 29) {
            Layout::Native
        } else {
            Layout::Classic
        }
    }
}

/// The API server's version, as `/version` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// The major version, e.g. 1.
    pub major: u32,
    /// The minor version, e.g. 29.
    pub minor: u32,
}

impl ServerVersion {
    /// Reads `major` and `minor`, tolerating the `+` some distributions append ("29+").
    pub fn from_info(info: &Info) -> Result<ServerVersion, InjectError> {
        let number = |field: &'static str, value: &str| {
            value
                .trim_end_matches('+')
                .parse::<u32>()
                .map_err(|_| InjectError::ServerVersion {
                    field,
                    value: value.into(),
                })
        };
        Ok(ServerVersion {
            major: number("major", &info.major)?,
            minor: number("minor", &info.minor)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(major: &str, minor: &str) -> Info {
        Info {
            major: major.into(),
            minor: minor.into(),
            ..Info::default()
        }
    }

    #[test]
    fn native_from_1_29() {
        let layout = |major, minor| {
            Layout::for_server(ServerVersion::from_info(&info(major, minor)).expect("version"))
        };
        assert_eq!(layout("1", "20"), Layout::Classic);
        assert_eq!(layout("1", "28+"), Layout::Classic);
        assert_eq!(layout("1", "29"), Layout::Native);
        assert_eq!(layout("1", "33+"), Layout::Native);
        assert_eq!(layout("2", "0"), Layout::Native);
    }

    #[test]
    fn unreadable_version_names_the_field() {
        let err = ServerVersion::from_info(&info("1", "x")).expect_err("bad");
        assert_eq!(
            err.to_string(),
            "the API server reports version minor \"x\", which is not a number"
        );
    }
}
