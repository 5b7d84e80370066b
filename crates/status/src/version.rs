//! Orders sidecar versions the way people read them: `1.10.0` is newer than `1.9.2`,
//! `1.4.0-rc.1` older than `1.4.0`, a leading `v` is ignored, and anything that is not a
//! version (a digest, `unknown`) comes after every version.

use std::cmp::Ordering;

use remora_api::sidecar_policy::ProxyVersion;

/// Newest first; equal versions spelled differently in a fixed order.
pub(crate) fn newest_first(a: &str, b: &str) -> Ordering {
    key(b).cmp(&key(a)).then_with(|| a.cmp(b))
}

// Variant and field order is the comparison order: any version beats `Other`, then the
// numbers, then a release beats its pre-releases, then pre-releases compare part by part.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key<'a> {
    Other,
    Version {
        core: Vec<u64>,
        release: bool,
        pre: Vec<Part<'a>>,
    },
}

// Numeric parts sort before text parts, as semver has it.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part<'a> {
    Number(u64),
    Text(&'a str),
}

fn key(version: &str) -> Key<'_> {
    let Some(v) = ProxyVersion::parse(version) else {
        return Key::Other;
    };
    let pre = v.pre.map_or_else(Vec::new, |p| {
        p.split('.')
            .map(|part| part.parse().map_or(Part::Text(part), Part::Number))
            .collect()
    });
    Key::Version {
        core: v.core,
        release: pre.is_empty(),
        pre,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_the_way_people_read_versions() {
        let mut v = vec![
            "unknown",
            "1.9.2",
            "sha256:abc",
            "1.10.0",
            "v1.11.0",
            "1.10.0-rc.2",
            "1.10.0-rc.10",
            "1.10.0-beta",
            "2.0.0",
        ];
        v.sort_by(|a, b| newest_first(a, b));
        assert_eq!(
            v,
            [
                "2.0.0",
                "v1.11.0",
                "1.10.0",
                "1.10.0-rc.10",
                "1.10.0-rc.2",
                "1.10.0-beta",
                "1.9.2",
                "sha256:abc",
                "unknown",
            ]
        );
    }

    #[test]
    fn the_same_version_spelled_twice_has_a_fixed_order() {
        assert_eq!(newest_first("v1.0.0", "1.0.0"), Ordering::Greater);
        assert_eq!(newest_first("1.0.0", "v1.0.0"), Ordering::Less);
        assert_eq!(newest_first("1.0.0", "1.0.0"), Ordering::Equal);
    }
}
