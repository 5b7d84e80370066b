//! Runs an Argo CD health script with Debian's `lua5.4`, the way Argo CD does: the object
//! as the global `obj`, the script's returned table read back.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

/// The interpreter `scripts/install-packages` installs.
const LUA: &str = "lua5.4";

/// The health statuses Argo CD knows.
const STATUSES: [&str; 6] = [
    "Healthy",
    "Progressing",
    "Degraded",
    "Suspended",
    "Missing",
    "Unknown",
];

/// What a health script returned.
#[derive(Debug, PartialEq, Eq)]
pub struct Health {
    pub status: String,
    pub message: String,
}

/// The script Argo CD would run for `kind`, from `gitops/argocd/remora.dev/<kind>/`.
pub fn script(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../gitops/argocd/remora.dev")
        .join(kind)
        .join("health.lua")
}

/// Runs the health script of `kind` on `obj`. Panics when `lua5.4` is missing (run
/// `scripts/install-packages`), when the script fails, or when it returns anything but a
/// known status and a message.
pub fn health(kind: &str, obj: &Value) -> Health {
    let script = script(kind);
    // The chunk comes on stdin; `arg[1]` is the script. A separator no message contains
    // keeps multi-line messages whole.
    let harness = format!(
        "obj = {}\nlocal hs = dofile(arg[1])\n\
         assert(type(hs) == 'table', 'the script returns a table')\n\
         assert(type(hs.status) == 'string' and type(hs.message) == 'string', 'status and message are strings')\n\
         io.write(hs.status, '\\0', hs.message)\n",
        literal(obj)
    );
    let mut child = Command::new(LUA)
        .arg("-")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{LUA} cannot run ({e}): run scripts/install-packages"));
    child
        .stdin
        .take()
        .expect("a stdin")
        .write_all(harness.as_bytes())
        .expect("the harness written");
    let out = child.wait_with_output().expect("lua's output");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    assert!(
        out.status.success(),
        "{} failed: {}{stdout}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, message) = stdout.split_once('\0').expect("status and message");
    assert!(
        STATUSES.contains(&status),
        "not an Argo CD health: {status}"
    );
    Health {
        status: status.to_owned(),
        message: message.to_owned(),
    }
}

/// `v` as a Lua table constructor, as Argo CD would hand it over: objects keyed by name,
/// arrays from 1, JSON null as nil.
pub fn literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("[{}] = {}", string(k), literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// A Lua string literal; control characters as decimal escapes, the rest byte for byte.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => out.push_str(&format!("\\{:03}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn json_becomes_a_lua_table_lua_reads_back() {
    let v = serde_json::json!({"a": [1, 2.5, true, null], "b\"\\\n": "x\ty\u{1}é", "c": {}});
    assert_eq!(
        literal(&v),
        "{[\"a\"] = {1, 2.5, true, nil}, [\"b\\\"\\\\\\010\"] = \"x\\009y\\001é\", [\"c\"] = {}}"
    );
    let check = format!(
        "local t = {}\nassert(t.a[2] == 2.5 and t.a[3] == true and t['b\"\\\\\\n'] == 'x\\ty\\1é')",
        literal(&v)
    );
    let out = Command::new(LUA)
        .args(["-e", &check])
        .output()
        .unwrap_or_else(|e| panic!("{LUA} cannot run ({e}): run scripts/install-packages"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
