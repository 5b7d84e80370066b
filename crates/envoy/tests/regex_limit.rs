//! The regex limit a sidecar's bootstrap sets is the one Envoy enforces: a real Envoy, given
//! the bootstrap plus a static route with a regex, refuses the regex above the bootstrap's
//! limit and takes it at or below, at the program size the control plane's checker gives it.

use std::{net::SocketAddr, path::PathBuf, process::Command};

use remora_envoy::bootstrap::Bootstrap;
use remora_model::input::ObjectKey;
use remora_test_support::envoy_bin;
use serde_json::{Value, json};

/// A regex whose RE2 program is 305 instructions: above Envoy's default limit of 100.
const PATTERN: &str = "/x{300}";

/// The sidecar's bootstrap with `limit`, and a listener whose route matches `PATTERN`.
fn config(limit: u32) -> Value {
    let mut config = Bootstrap {
        proxy: ObjectKey::new("shop", "frontend"),
        service_account: "frontend".into(),
        workload: "Deployment/web".into(),
        xds_host: "127.0.0.1".into(),
        xds_port: 15010,
        admin: SocketAddr::from(([127, 0, 0, 1], 15000)),
        delta: false,
        max_regex_program_size: limit,
    }
    .to_json();
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "regex",
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "route_config": {"name": "regex", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"safe_regex": {"regex": PATTERN}}, "direct_response": {"status": 200}},
        ]}]},
    });
    config["static_resources"]["listeners"] = json!([{
        "name": "regex",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10001}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
    }]);
    config
}

/// Envoy's verdict on the config: `Ok` or its error.
fn validate(label: &str, config: &Value) -> Result<(), String> {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("regex-limit-{label}.json"));
    std::fs::write(&path, config.to_string()).expect("write the config");
    let out = Command::new(envoy_bin())
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warning",
            "-c",
        ])
        .arg(&path)
        .output()
        .expect("run envoy");
    if out.status.success() {
        return Ok(());
    }
    Err(String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

#[test]
fn envoy_enforces_the_regex_limit_the_bootstrap_sets() {
    let size = remora_re2::measure(PATTERN).expect("RE2 takes it");
    assert_eq!(size, 305);

    let default = remora_re2::DEFAULT_MAX_PROGRAM_SIZE;
    let refused = validate("default", &config(default)).expect_err("above the default limit");
    assert!(
        refused.contains(&format!(
            "RE2 program size of {size} > max program size of {default}"
        )),
        "{refused}"
    );
    let just_below = validate("just-below", &config(size - 1)).expect_err("one below its size");
    assert!(just_below.contains("program size"), "{just_below}");

    validate("at-size", &config(size)).expect("at its size");
    validate("raised", &config(1000)).expect("under a raised limit");
}
