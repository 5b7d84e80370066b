//! Helpers the tests of several crates share. Nothing here is for production code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// A label set from `(key, value)` pairs.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The Envoy that `scripts/install-tools` installs (`ENVOY_BIN` when `scripts/env.sh` is
/// sourced). A test that needs Envoy fails without it rather than passing untested.
pub fn envoy_bin() -> PathBuf {
    let path = std::env::var_os("ENVOY_BIN").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is set");
            Path::new(&home).join(".cache/remora/bin/envoy")
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "no Envoy at {}: run scripts/install-tools",
        path.display()
    );
    path
}

/// The kubelet's `$(VAR)` expansion of a container's command, args and env values: `$$` is a
/// literal `$`, `$(NAME)` is `vars[NAME]`, and a reference to an unknown name stays as written.
pub fn expand(text: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some((name, after)) = rest
            .strip_prefix("$(")
            .and_then(|r| r.split_once(')'))
            .filter(|(name, _)| vars.contains_key(name))
        {
            out.push_str(vars[name]);
            rest = after;
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out + rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_every_pair_and_a_later_key_wins() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("app", "api")]);
        assert_eq!(l.len(), 2);
        assert_eq!(l["app"], "api");
        assert_eq!(l["tier"], "front");
    }

    #[test]
    fn expand_replaces_known_references_and_keeps_the_rest() {
        let vars = BTreeMap::from([("POD_NAME", "web-0"), ("NS", "shop")]);
        assert_eq!(expand("$(NS)/$(POD_NAME)", &vars), "shop/web-0");
        assert_eq!(
            expand("$$(NS) $(OTHER) $ $(NS", &vars),
            "$(NS) $(OTHER) $ $(NS"
        );
    }
}
