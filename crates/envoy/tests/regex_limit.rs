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

/// The sidecar's bootstrap with `limit`, and a listener whose route matches `pattern`.
fn config(pattern: &str, limit: u32) -> Value {
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
            {"match": {"safe_regex": {"regex": pattern}}, "direct_response": {"status": 200}},
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
    let refused =
        validate("default", &config(PATTERN, default)).expect_err("above the default limit");
    assert!(
        refused.contains(&format!(
            "RE2 program size of {size} > max program size of {default}"
        )),
        "{refused}"
    );
    let just_below =
        validate("just-below", &config(PATTERN, size - 1)).expect_err("one below its size");
    assert!(just_below.contains("program size"), "{just_below}");

    validate("at-size", &config(PATTERN, size)).expect("at its size");
    validate("raised", &config(PATTERN, 1000)).expect("under a raised limit");
}

/// What `remora analyze` flags as REM003 in its fixture is what Envoy refuses: the regex the
/// finding names, under the limit analyze checked against, fails Envoy's own validation.
#[test]
fn the_regex_analyze_refuses_is_one_envoy_refuses() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../analyze/tests/fixtures/REM003");
    let loaded = remora_inputs::load_dir(&dir).expect("the fixture loads");
    let validation = remora_api::ValidationSettings::default();
    let found = remora_analyze::analyze(&remora_analyze::Input {
        objects: &loaded.objects,
        origins: &loaded.origins,
        unreadable: &loaded.problems,
        validation,
    });
    let [finding] = &found[..] else {
        panic!("one finding expected: {found:?}")
    };
    assert_eq!(finding.code, "REM003");
    let route = loaded.objects.iter().find_map(|o| match o {
        remora_model::input::Object::TrafficRoute(r) => Some(r),
        _ => None,
    });
    let path = route.and_then(|r| r.spec.http[0].matches[0].path.clone());
    let pattern = path.expect("the fixture's regex").value;
    let limit = validation.max_regex_program_size;
    let refused = validate("analyzed", &config(&pattern, limit)).expect_err("Envoy refuses it");
    assert!(
        refused.contains(&format!("> max program size of {limit}")),
        "{refused}"
    );
}
