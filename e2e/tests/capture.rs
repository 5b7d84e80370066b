//! Transparent interception for real: `remora init-network` programs the nat rules inside a
//! network namespace this test creates ("the pod"), wired by a veth pair to a second one
//! ("the peer", another pod or a Service's backend), and real TCP connections show where
//! each kind of traffic lands. Every address exists only inside these namespaces; every
//! namespace is deleted at the end, also when a check fails (`Netns`'s `Drop`).
//!
//! Needs root, iproute2, iptables (`scripts/install-packages`), util-linux's `setpriv`,
//! python3 (the listeners) and bash (the clients). Without them the tests say they were
//! skipped; under CI (`CI=true`) they fail instead.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    time::Duration,
};

/// The proxy's user and group in these tests, and an application's.
const PROXY: (u32, u32) = (1337, 1337);
const APP: (u32, u32) = (1000, 1000);
const OUTBOUND: u16 = 15001;
const INBOUND: u16 = 15006;

static NEXT: AtomicU32 = AtomicU32::new(1);

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(role: &str, n: u32) -> Netns {
        let name = format!("remora-cap-{}-{n}{role}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.sh(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn exec(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs a command in the namespace; its standard output, or a failed test.
    fn sh(&self, args: &[&str]) -> String {
        run(&mut self.exec(args))
    }

    /// One family's nat table as the nft backend reads it (`iptables-nft-save` or
    /// `ip6tables-nft-save`), without the dated comments and with the counters zeroed.
    fn nat_table(&self, save: &str) -> String {
        let text = self.sh(&[save, "-t", "nat"]);
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.rsplit_once(" [") {
                Some((chain, _)) if l.starts_with(':') => format!("{chain} [0:0]"),
                _ => l.to_owned(),
            })
            .collect();
        lines.join("\n")
    }

    /// Both families' nat tables.
    fn nat_tables(&self) -> String {
        let v4 = self.nat_table("iptables-nft-save");
        format!("{v4}\n{}", self.nat_table("ip6tables-nft-save"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !deleted.is_ok_and(|s| s.success()) {
            eprintln!("could not delete network namespace {}", self.name);
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Listeners that answer each connection with their label and the connection's original
/// destination (`SO_ORIGINAL_DST`, what the proxy reads), then close it.
const LISTENERS: &str = r#"
import socket, struct, sys, threading
def answer(label, listener):
    while True:
        conn, _ = listener.accept()
        try:
            d = conn.getsockopt(socket.SOL_IP, 80, 16)
            orig = "%s:%d" % (socket.inet_ntoa(d[4:8]), struct.unpack("!H", d[2:4])[0])
        except OSError:
            orig = "-"
        conn.sendall(("%s %s\n" % (label, orig)).encode())
        conn.close()
threads = []
for spec in sys.argv[1:]:
    label, port = spec.split("=")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(16)
    threads.append(threading.Thread(target=answer, args=(label, s), daemon=True))
for t in threads:
    t.start()
print("ready", flush=True)
for t in threads:
    t.join()
"#;

/// Listener processes, killed on drop.
struct Listeners(Child);

impl Listeners {
    /// Starts `label=port` listeners in `ns` and waits (bounded) until they listen.
    fn start(ns: &Netns, specs: &[&str]) -> Listeners {
        let mut args = vec!["python3", "-c", LISTENERS];
        args.extend(specs);
        let mut child = ns
            .exec(&args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("piped");
        let listeners = Listeners(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(ready.as_deref().map(str::trim), Ok("ready"), "{specs:?}");
        listeners
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects from `ns` as `user` to `host:port` and returns the first line answered, or
/// what went wrong (a connection neither captured nor answered times out within 5 s).
fn connect(ns: &Netns, user: (u32, u32), host: &str, port: u16) -> String {
    let (uid, gid) = (user.0.to_string(), user.1.to_string());
    let port = port.to_string();
    let script = r#"exec 3<>"/dev/tcp/$1/$2" && read -r -t 5 line <&3 && echo "$line""#;
    let args = [
        "setpriv",
        "--reuid",
        &uid,
        "--regid",
        &gid,
        "--clear-groups",
        "timeout",
        "5",
        "bash",
        "-c",
        script,
        "client",
        host,
        &port,
    ];
    let out = ns.exec(&args).output().expect("the client runs");
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if answer.is_empty() {
        format!(
            "no answer ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    } else {
        answer
    }
}

/// The `remora` binary next to this test's build (`target/<profile>/remora`): cargo holds
/// the build lock while tests run, so a test cannot build it; `cargo test --workspace`
/// builds it (the cli's own tests run it).
fn remora_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/capture-<hash>
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("remora");
    let help = Command::new(&bin).args(["init-network", "--help"]).output();
    assert!(
        help.is_ok_and(|o| o.status.success()),
        "no remora with init-network at {}: run `cargo build -p remora` first",
        bin.display()
    );
    bin
}

/// Whether the tests can run here: root and the tools. Under CI they must.
fn runnable() -> bool {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let tools = [
        "ip",
        "iptables-nft-save",
        "setpriv",
        "python3",
        "bash",
        "timeout",
    ];
    let missing: Vec<&str> = tools
        .into_iter()
        .filter(|tool| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            !std::env::split_paths(&path)
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .any(|dir| dir.join(tool).is_file())
        })
        .collect();
    let mut problems = Vec::new();
    if !is_root {
        problems.push("root".to_owned());
    }
    if !missing.is_empty() {
        problems.push(format!("{} (scripts/install-packages)", missing.join(", ")));
    }
    if problems.is_empty() {
        return true;
    }
    let why = format!("the capture tests need {}", problems.join(" and "));
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipped: {why}");
    false
}

/// A pod namespace (`10.254.<n>.2`) and a peer namespace (`10.254.<n>.3` and `.4`) joined by
/// a veth pair.
struct Pair {
    pod: Netns,
    peer: Netns,
    net: String,
}

impl Pair {
    fn new() -> Pair {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (pod, peer) = (Netns::new("p", n), Netns::new("q", n));
        let net = format!("10.254.{n}");
        pod.sh(&[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
            &peer.name,
        ]);
        pod.sh(&["ip", "addr", "add", &format!("{net}.2/24"), "dev", "eth0"]);
        peer.sh(&["ip", "addr", "add", &format!("{net}.3/24"), "dev", "eth0"]);
        peer.sh(&["ip", "addr", "add", &format!("{net}.4/24"), "dev", "eth0"]);
        for ns in [&pod, &peer] {
            ns.sh(&["ip", "link", "set", "eth0", "up"]);
        }
        Pair { pod, peer, net }
    }

    fn ip(&self, host: u8) -> String {
        format!("{}.{host}", self.net)
    }

    /// `remora init-network` in the pod with the test's proxy user and `flags`; its output.
    fn init_network(&self, flags: &[&str]) -> String {
        let bin = remora_bin();
        let (uid, gid) = (PROXY.0.to_string(), PROXY.1.to_string());
        let mut args = vec![
            bin.to_str().expect("a UTF-8 path"),
            "init-network",
            "--proxy-uid",
            &uid,
            "--proxy-gid",
            &gid,
        ];
        args.extend(flags);
        self.pod.sh(&args)
    }
}

#[test]
fn outbound_connections_are_captured_except_the_proxys_and_the_excluded_ones() {
    if !runnable() {
        return;
    }
    let pair = Pair::new();
    let (peer, excluded_peer) = (pair.ip(3), pair.ip(4));
    let printed = pair.init_network(&[
        "--exclude-outbound-ports=5432",
        &format!("--exclude-outbound-cidrs={excluded_peer}/32,fd00:254::/64"),
        "--iptables-backend=nft",
    ]);
    assert!(
        printed.contains("iptables backend: nft (asked for nft)"),
        "{printed}"
    );
    let _pod = Listeners::start(
        &pair.pod,
        &[
            &format!("outbound-capture={OUTBOUND}"),
            &format!("inbound-capture={INBOUND}"),
        ],
    );
    let _peer = Listeners::start(&pair.peer, &["peer-8080=8080", "peer-5432=5432"]);
    let tables = pair.pod.nat_tables();

    // (a) An application's connection lands on the outbound capture port, which can tell
    // where it was going.
    let app = connect(&pair.pod, APP, &peer, 8080);
    assert_eq!(app, format!("outbound-capture {peer}:8080"), "{tables}");
    // (b) The proxy's own connection (its UID and GID) goes where it was sent ...
    assert_eq!(
        connect(&pair.pod, PROXY, &peer, 8080),
        "peer-8080 -",
        "{tables}"
    );
    // ... but the UID alone, with another group, is not the proxy.
    let uid_only = connect(&pair.pod, (PROXY.0, APP.1), &peer, 8080);
    assert_eq!(
        uid_only,
        format!("outbound-capture {peer}:8080"),
        "{tables}"
    );
    // (c) An excluded port and an excluded network are not captured.
    assert!(
        connect(&pair.pod, APP, &peer, 5432).starts_with("peer-5432 "),
        "{tables}"
    );
    let to_excluded = connect(&pair.pod, APP, &excluded_peer, 8080);
    assert!(
        to_excluded.starts_with("peer-8080 "),
        "{to_excluded}\n{tables}"
    );
    // Each network went to its own family's table.
    let (v4, v6) = (
        pair.pod.nat_table("iptables-nft-save"),
        pair.pod.nat_table("ip6tables-nft-save"),
    );
    assert!(
        v4.contains(&format!("-d {excluded_peer}/32 ")) && !v4.contains("fd00:254"),
        "{v4}"
    );
    assert!(
        v6.contains("-d fd00:254::/64 ") && !v6.contains(&excluded_peer),
        "{v6}"
    );
}

#[test]
fn inbound_connections_are_captured_and_the_proxy_hands_them_to_the_application() {
    if !runnable() {
        return;
    }
    let pair = Pair::new();
    let pod_ip = pair.ip(2);
    pair.init_network(&["--exclude-inbound-ports=9091"]);
    let _pod = Listeners::start(
        &pair.pod,
        &[
            &format!("inbound-capture={INBOUND}"),
            &format!("outbound-capture={OUTBOUND}"),
            "app-9090=9090",
            "app-9091=9091",
            "proxy-readiness=15021",
        ],
    );
    let tables = pair.pod.nat_tables();

    // From another pod: an intercepted port lands on the inbound capture port with its
    // original destination; an excluded one and the proxy's readiness port do not.
    let inbound = connect(&pair.peer, APP, &pod_ip, 9090);
    assert_eq!(
        inbound,
        format!("inbound-capture {pod_ip}:9090"),
        "{tables}"
    );
    assert!(
        connect(&pair.peer, APP, &pod_ip, 9091).starts_with("app-9091 "),
        "{tables}"
    );
    let probe = connect(&pair.peer, APP, &pod_ip, 15021);
    assert!(probe.starts_with("proxy-readiness "), "{probe}\n{tables}");
    // A direct connection to the outbound capture port is handed to the inbound listener.
    let direct = connect(&pair.peer, APP, &pod_ip, OUTBOUND);
    assert_eq!(
        direct,
        format!("inbound-capture {pod_ip}:{OUTBOUND}"),
        "{tables}"
    );

    // The hand-off: the proxy reaches the application on loopback and on the pod IP.
    for host in ["127.0.0.1", pod_ip.as_str()] {
        let handed = connect(&pair.pod, PROXY, host, 9090);
        assert!(
            handed.starts_with("app-9090 "),
            "{host}: {handed}\n{tables}"
        );
    }
    // An application calling its own pod IP, or loopback, is not captured.
    for host in ["127.0.0.1", pod_ip.as_str()] {
        let own = connect(&pair.pod, APP, host, 9090);
        assert!(own.starts_with("app-9090 "), "{host}: {own}\n{tables}");
    }
}

#[test]
fn applying_twice_gives_the_same_tables() {
    if !runnable() {
        return;
    }
    let pair = Pair::new();
    let flags = [
        "--inbound-ports=8080,9090",
        "--exclude-outbound-ports=5432",
        "--exclude-outbound-cidrs=10.96.0.0/12,fd00::/8",
    ];
    let first_output = pair.init_network(&flags);
    let first = pair.pod.nat_tables();
    let second_output = pair.init_network(&flags);
    let second = pair.pod.nat_tables();
    assert_eq!(first, second, "{first_output}\n{second_output}");
    assert_eq!(
        first.matches("-A OUTPUT -p tcp -j REMORA_OUTPUT").count(),
        2,
        "one jump per family:\n{first}"
    );
    // Auto chose nft both times: the first run's detection left no legacy table behind.
    for output in [first_output, second_output] {
        assert!(
            output.contains("iptables backend: nft (auto: no rules in the legacy nat tables)"),
            "{output}"
        );
    }
}

#[test]
fn auto_keeps_to_the_legacy_backend_when_it_already_holds_rules() {
    if !runnable() {
        return;
    }
    let pair = Pair::new();
    pair.pod.sh(&[
        "iptables-legacy",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "eth0",
        "-j",
        "RETURN",
    ]);
    let printed = pair.init_network(&[]);
    assert!(
        printed
            .contains("iptables backend: legacy (auto: the legacy IPv4 nat table holds 1 rules)"),
        "{printed}"
    );
    let legacy = pair.pod.sh(&["iptables-legacy-save", "-t", "nat"]);
    assert!(
        legacy.contains("-A OUTPUT -p tcp -j REMORA_OUTPUT"),
        "{legacy}"
    );
    // The whole table was restored: the rule found there is gone.
    assert!(!legacy.contains("POSTROUTING -o eth0"), "{legacy}");
}
