//! `agentsh detect` against what the machine really allows: each answer is checked by doing
//! the same thing another way (util-linux `unshare`, the cgroup files, Python calling the
//! Landlock syscall, the kernel's seccomp action list), as root and as `nobody`; the JSON
//! schema and the score arithmetic; `--output yaml` says the same; `detect config` loads.

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use common::TempDir;
use serde_json::Value;

/// The binary, copied where `nobody` may run it.
fn binary(dir: &TempDir) -> PathBuf {
    let path = dir.path().join("agentsh");
    common::copy_binary(&path);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `argv` as root, or as `nobody` through runuser.
fn command(as_nobody: bool, argv: &[&str]) -> Command {
    let mut c = if as_nobody {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).args(argv);
        c
    } else {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]);
        c
    };
    c.current_dir("/");
    c
}

fn succeeds(as_nobody: bool, argv: &[&str]) -> bool {
    command(as_nobody, argv).output().map(|o| o.status.success()).unwrap_or(false)
}

fn detect(bin: &Path, as_nobody: bool, format: &str) -> String {
    let out = command(as_nobody, &[bin.to_str().unwrap(), "detect", "--output", format]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn landlock_abi_by_python(as_nobody: bool) -> u64 {
    let py = "import ctypes; print(max(ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1), 0))";
    let out = command(as_nobody, &["python3", "-c", py]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn cgroup2_mount() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().find(|l| l.contains(" - cgroup2 ")).and_then(|l| l.split(' ').nth(4)).map(str::to_string)
}

/// The schema, and the score as the sum of the active domains' weights.
fn check_schema(v: &Value) {
    for key in ["platform", "security_mode", "protection_score", "domains", "capabilities", "summary", "tips"]
    {
        assert!(v.get(key).is_some(), "missing {key}: {v:#}");
    }
    let domains = v["domains"].as_array().unwrap();
    let names: Vec<&str> = domains.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["File Protection", "Command Control", "Network", "Resource Limits", "Isolation"]);
    let weights: Vec<u64> = domains.iter().map(|d| d["weight"].as_u64().unwrap()).collect();
    assert_eq!(weights, [25, 25, 20, 15, 15]);
    let mut score = 0;
    for d in domains {
        let active = d["backends"].as_array().unwrap().iter().any(|b| b["available"] == true);
        assert_eq!(d["active"], active, "{d:#}");
        assert_eq!(d["score"].as_u64().unwrap(), if active { d["weight"].as_u64().unwrap() } else { 0 });
        score += d["score"].as_u64().unwrap();
        for b in d["backends"].as_array().unwrap() {
            for key in ["name", "available", "detail", "description", "check_method"] {
                assert!(b.get(key).is_some(), "backend without {key}: {b:#}");
            }
        }
    }
    assert_eq!(v["protection_score"].as_u64().unwrap(), score);
    let lost: u64 =
        domains.iter().filter(|d| d["active"] == false).map(|d| d["weight"].as_u64().unwrap()).sum();
    let tip_points: u64 = v["tips"].as_array().unwrap().iter().map(|t| t["points"].as_u64().unwrap()).sum();
    assert_eq!(tip_points, lost, "tips pay back exactly what is lost");
}

/// Every answer that can be checked another way agrees with that way.
fn check_against_the_machine(v: &Value, as_nobody: bool) {
    let caps = &v["capabilities"];
    assert_eq!(caps["network_namespace"], succeeds(as_nobody, &["unshare", "--net", "true"]), "{caps:#}");
    assert_eq!(
        caps["pid_namespace"],
        succeeds(as_nobody, &["unshare", "--pid", "--fork", "true"]),
        "{caps:#}"
    );
    let abi = landlock_abi_by_python(as_nobody);
    assert_eq!(caps["landlock_abi"].as_u64().unwrap(), abi);
    assert_eq!(caps["landlock_network"], abi >= 4);
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    assert_eq!(caps["seccomp_basic"], actions.split_whitespace().any(|a| a == "user_notif"));
    let mount = cgroup2_mount();
    assert_eq!(caps["cgroups_v2_mount"].as_str().map(str::to_string), mount);
    if let Some(m) = mount {
        let listed = std::fs::read_to_string(Path::new(&m).join("cgroup.controllers")).unwrap();
        let got: Vec<&str> =
            caps["cgroups_v2_controllers"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(got, listed.split_whitespace().collect::<Vec<_>>());
    }
}

#[test]
fn detect_as_root_matches_the_machine() {
    if !common::privileged("detect_as_root_matches_the_machine") {
        return;
    }
    let dir = TempDir::new("detect");
    let bin = binary(&dir);
    let v: Value = serde_json::from_str(&detect(&bin, false, "json")).unwrap();
    check_schema(&v);
    check_against_the_machine(&v, false);
    let caps = &v["capabilities"];
    // The session machinery these tests run on needs exactly these; detect must see them.
    for key in [
        "seccomp",
        "seccomp_user_notify",
        "network_namespace",
        "pid_namespace",
        "cgroups_v2",
        "capabilities_drop",
    ] {
        assert_eq!(caps[key], true, "{key}: {caps:#}");
    }
    assert_eq!(v["security_mode"], "seccomp");
    let yaml: Value = serde_norway::from_str(&detect(&bin, false, "yaml")).unwrap();
    assert_eq!(yaml["protection_score"], v["protection_score"]);
    assert_eq!(yaml["capabilities"], v["capabilities"]);
    let table = detect(&bin, false, "table");
    assert!(table.contains(&format!("Protection score: {}/100", v["protection_score"])), "{table}");
}

#[test]
fn detect_as_nobody_matches_what_nobody_may_do() {
    if !common::privileged("detect_as_nobody_matches_what_nobody_may_do") {
        return;
    }
    let dir = TempDir::new("detect");
    let bin = binary(&dir);
    let root: Value = serde_json::from_str(&detect(&bin, false, "json")).unwrap();
    let v: Value = serde_json::from_str(&detect(&bin, true, "json")).unwrap();
    check_schema(&v);
    check_against_the_machine(&v, true);
    let caps = &v["capabilities"];
    assert_eq!(caps["ebpf"], false, "loading cgroup programs needs privilege");
    assert_eq!(caps["cgroups_v2"], false, "nobody cannot create cgroups here");
    assert_eq!(caps["capabilities_drop"], false, "nobody has no CAP_SETPCAP");
    assert!(v["protection_score"].as_u64() < root["protection_score"].as_u64());
    assert_ne!(v["security_mode"], "seccomp", "without a network namespace the seccomp funnel cannot hold");
}

#[test]
fn detect_config_writes_a_config_the_server_loads() {
    if !common::privileged("detect_config_writes_a_config_the_server_loads") {
        return;
    }
    let dir = TempDir::new("detect");
    let file = dir.path().join("server.yaml");
    let out =
        Command::new(common::AGENTSH).args(["detect", "config", "--output"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("security:\n  mode: seccomp\n"), "{text}");
    let check =
        Command::new(common::AGENTSH).args(["policy", "validate", "--config"]).arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
