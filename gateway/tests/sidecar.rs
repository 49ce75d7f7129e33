//! The sidecar topology of DESIGN.md §5, reproduced with namespaces (CI has no container
//! engine): the gateway runs in a mount and PID namespace of its own; the "agent container"
//! runs in another mount namespace and a PID namespace nested in the gateway's (as with a
//! compose `pid: service:agentsh` or a pod's shared process namespace), shares the gateway's
//! network namespace, and sees the gateway's socket directory at `/run/agentsh`. Its agent is
//! started with `agentsh wrap`, and its egress is governed by the gateway.

mod common;

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::TempDir;
use nix::sched::{CloneFlags, setns};

const BODY: &str = "hello from inside the shared network namespace";

/// A network namespace made for the test (`ip netns`), deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new() -> NetNs {
        let name = format!("agentsh-sidecar-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
        assert!(
            Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]).status().unwrap().success()
        );
        NetNs(name)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.0))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

/// A plain HTTP server bound inside `ns` (a thread joins it just to bind).
fn http_in(ns: &Path) -> u16 {
    let ns = std::fs::File::open(ns).unwrap();
    let listener = std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
        TcpListener::bind("127.0.0.1:0").unwrap()
    })
    .join()
    .unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                BODY.len()
            );
        }
    });
    port
}

/// A shell command run with the shared socket dir at `/run/agentsh` in a fresh mount
/// namespace (a tmpfs over `/run` first, so nothing is made on the host).
fn with_socket_dir(socket_dir: &Path, then: &str) -> String {
    format!(
        "mount -t tmpfs tmpfs /run && mkdir -p /run/agentsh && mount --bind {} /run/agentsh && {then}",
        socket_dir.display()
    )
}

struct Gateway(Child);

impl Drop for Gateway {
    /// SIGKILL to `unshare`, whose `--kill-child=SIGTERM` then stops the server as an operator
    /// would: it destroys its sessions, cgroups included.
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_agent_container_sharing_the_network_namespace_is_governed_through_wrap() {
    if !common::privileged("an_agent_container_sharing_the_network_namespace_is_governed_through_wrap") {
        return;
    }
    let ns = NetNs::new();
    let port = http_in(&ns.path());
    let dir = TempDir::new("sidecar");
    let socket_dir = dir.path().join("run");
    std::fs::create_dir_all(&socket_dir).unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let config = dir.write("server.yaml", "state_dir: /run/agentsh\ndns:\n  upstream: [\"127.0.0.1:9\"]\n");
    let policy = dir.write(
        "policy.yaml",
        &format!(
            "version: 1\nname: sidecar\nnetwork_rules:\n\
             \x20 - {{name: service-in-pod, cidrs: [127.0.0.1/32], ports: [{port}], decision: allow}}\n\
             \x20 - {{name: no-testnet, cidrs: [203.0.113.0/24], decision: deny}}\n"
        ),
    );
    let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    // The gateway "container": the shared netns, its own mount and PID namespaces.
    let gateway = Gateway(
        Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .args([
                "--",
                "unshare",
                "--mount",
                "--pid",
                "--fork",
                "--kill-child=SIGTERM",
                "--mount-proc",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c"])
            .arg(with_socket_dir(
                &socket_dir,
                &format!("exec {} server --config {}", common::AGENTSH, config.display()),
            ))
            .env("AGENTSH_NO_AUTO", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket_dir.join("notify.sock").exists() {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(dir.path().join("gateway.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The agent "container": the same netns, a PID namespace nested in the gateway's, its own
    // mount namespace with the socket dir, and the agent started under `agentsh wrap`.
    let gateway_pid = gateway.0.id();
    let agent = |script: &str| {
        let inner = with_socket_dir(
            &socket_dir,
            &format!(
                "export AGENTSH_STATE_DIR=/run/agentsh AGENTSH_NO_AUTO=1; cd {ws}; \
                 sid=$({a} session create --workspace {ws} --policy {policy}) && \
                 {a} wrap --session \"$sid\" -- sh -c '{script}'; echo \"exit=$?\"; {a} events --session \"$sid\" --json",
                ws = ws.display(),
                a = common::AGENTSH,
                policy = policy.display(),
            ),
        );
        Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .arg(format!("--pid=/proc/{gateway_pid}/ns/pid_for_children"))
            .args(["--", "unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private"])
            .args(["sh", "-c", &inner])
            .output()
            .unwrap()
    };
    let out = agent(&format!(
        "curl -sS -m 5 http://127.0.0.1:{port}/; echo; curl -sS -m 3 http://203.0.113.5/ || echo denied; \
         tail -1 /proc/self/cgroup"
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains(BODY), "the allowed service answered: {stdout}{stderr}");
    assert!(stdout.contains("denied"), "{stdout}{stderr}");
    assert!(stdout.contains("exit=0"), "{stdout}{stderr}");
    assert!(stdout.contains("/agentsh/session-"), "the agent runs in the session cgroup: {stdout}");
    let events: Vec<serde_json::Value> =
        stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(kinds.contains(&"wrap_started"), "{kinds:?}");
    assert!(
        events.iter().any(|e| e["type"] == "net_connect" && e["policy"]["rule"] == "service-in-pod"),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e["type"] == "net_connect_blocked" && e["policy"]["rule"] == "no-testnet"),
        "{events:#?}"
    );
}
