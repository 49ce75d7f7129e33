//! Table tests for `file_rules`: variable expansion, operation families, first match wins,
//! decisions per operation, defaults inside and outside the workspace, the embedded default
//! policy's built-in denies, and the subtree analysis a coarse layer uses.

use std::path::Path;

use policies::{
    embedded,
    engine::file::{
        DEFAULT_ALLOW_WORKSPACE, DEFAULT_DENY_FILE, FileOp, FileRules, FileVerdict, INVALID_PATH, Subtree,
    },
    load_policy,
};

const WS: &str = "/work/ws";

fn vars(name: &str) -> Option<String> {
    (name == "HOME").then(|| "/home/agent".to_string())
}

fn rules(yaml: &str) -> FileRules {
    let policy = load_policy(yaml, "t.yaml").expect("test policy loads");
    FileRules::new(&policy.file_rules, Path::new(WS), &vars)
}

const POLICY: &str = "file_rules:
  - {name: ssh, paths: ['~/.ssh/**'], operations: ['*'], decision: deny, message: no keys}
  - {name: env-files, paths: ['${WORKSPACE}/**/.env'], operations: [read], decision: audit}
  - {name: no-exec-tmp, paths: ['/tmp/**'], operations: [exec], decision: deny}
  - {name: trash, paths: ['${WORKSPACE}/**'], operations: [delete], decision: soft_delete}
  - {name: ro-vendor, paths: ['${WORKSPACE}/vendor/**'], operations: [write, create], decision: deny}
  - {name: tmp, paths: ['/tmp/**'], decision: allow}
  - {name: ask, paths: ['/srv/**'], decision: approve}
";

#[test]
fn table() {
    let r = rules(POLICY);
    let cases: &[(&str, FileOp, FileVerdict, &str)] = &[
        ("/home/agent/.ssh/id_ed25519", FileOp::Read, FileVerdict::Deny, "ssh"),
        ("/home/agent/.ssh", FileOp::List, FileVerdict::Deny, "ssh"),
        ("/home/agent/.ssh/config", FileOp::Write, FileVerdict::Deny, "ssh"),
        ("/home/agent/.sshx", FileOp::Read, FileVerdict::Deny, DEFAULT_DENY_FILE),
        ("/work/ws/app/.env", FileOp::Read, FileVerdict::Audit, "env-files"),
        ("/work/ws/.env", FileOp::Stat, FileVerdict::Audit, "env-files"),
        ("/work/ws/app/.env", FileOp::Write, FileVerdict::Allow, DEFAULT_ALLOW_WORKSPACE),
        ("/tmp/x/run.sh", FileOp::Exec, FileVerdict::Deny, "no-exec-tmp"),
        ("/tmp/x/run.sh", FileOp::Write, FileVerdict::Allow, "tmp"),
        ("/work/ws/a.txt", FileOp::Delete, FileVerdict::SoftDelete, "trash"),
        ("/work/ws/dir", FileOp::Rmdir, FileVerdict::Allow, "trash"),
        ("/work/ws/a.txt", FileOp::RenameFrom, FileVerdict::Allow, "trash"),
        ("/work/ws/vendor/x.c", FileOp::Write, FileVerdict::Deny, "ro-vendor"),
        ("/work/ws/vendor/new", FileOp::RenameTo, FileVerdict::Deny, "ro-vendor"),
        ("/work/ws/vendor/new", FileOp::Mkdir, FileVerdict::Deny, "ro-vendor"),
        ("/work/ws/vendor/x.c", FileOp::Read, FileVerdict::Allow, DEFAULT_ALLOW_WORKSPACE),
        ("/work/ws/vendor/x.c", FileOp::Delete, FileVerdict::SoftDelete, "trash"),
        ("/srv/data", FileOp::Read, FileVerdict::Deny, "ask"),
        ("/etc/passwd", FileOp::Read, FileVerdict::Deny, DEFAULT_DENY_FILE),
        ("/work/ws/../ws/src/main.rs", FileOp::Write, FileVerdict::Allow, DEFAULT_ALLOW_WORKSPACE),
        ("/work/ws/../../home/agent/.ssh/id", FileOp::Read, FileVerdict::Deny, "ssh"),
        ("relative/path", FileOp::Read, FileVerdict::Deny, INVALID_PATH),
    ];
    for &(path, op, verdict, rule) in cases {
        let got = r.decide(Path::new(path), op);
        assert_eq!((got.verdict, got.rule), (verdict, rule), "{op:?} {path}");
    }
    assert_eq!(r.decide(Path::new("/home/agent/.ssh/k"), FileOp::Read).message, Some("no keys"));
}

#[test]
fn operation_families() {
    let r = rules(
        "file_rules:
  - {name: w, paths: ['/w/**'], operations: [write], decision: deny}
  - {name: c, paths: ['/c/**'], operations: [create], decision: deny}
  - {name: d, paths: ['/d/**'], operations: [delete], decision: deny}
  - {name: x, paths: ['/x/**'], operations: [exec], decision: deny}
  - {name: r, paths: ['/r/**'], operations: [read], decision: deny}
  - {name: all, decision: allow}
",
    );
    let denied = |root: &str| -> Vec<FileOp> {
        FileOp::ALL
            .into_iter()
            .filter(|op| r.decide(&Path::new(root).join("f"), *op).verdict == FileVerdict::Deny)
            .collect()
    };
    use FileOp::*;
    assert_eq!(denied("/w"), vec![Write, Chmod, Chown]);
    assert_eq!(denied("/c"), vec![Create, Mkdir, Symlink, Link, Mknod, RenameTo]);
    assert_eq!(denied("/d"), vec![Delete, Rmdir, RenameFrom]);
    assert_eq!(denied("/x"), vec![Exec]);
    assert_eq!(denied("/r"), vec![Read, Stat, List, Readlink]);
    assert_eq!(denied("/elsewhere"), Vec::<FileOp>::new());
}

#[test]
fn unset_variables_match_nothing_and_workspace_is_a_variable() {
    let r = rules(
        "file_rules:
  - {name: unset, paths: ['${NOPE}/**', '${HOME}/.netrc'], decision: deny}
  - {name: ws, paths: ['${PROJECT_ROOT}/secret/**'], decision: deny}
  - {name: defaulted, paths: ['${NOPE:-/srv/keys}/**', '${REL:-relative}/**'], decision: deny}
",
    );
    assert_eq!(r.decide(Path::new("/work/ws/secret/a"), FileOp::Read).rule, "ws");
    assert_eq!(r.decide(Path::new("/work/ws/a"), FileOp::Read).rule, DEFAULT_ALLOW_WORKSPACE);
    assert_eq!(r.decide(Path::new("/srv/keys/a"), FileOp::Read).rule, "defaulted");
    assert_eq!(r.workspace(), Path::new(WS));
    // What matches nothing is named, to be warned about.
    let unapplied: Vec<(&str, &str, Option<&str>)> =
        r.unapplied().iter().map(|u| (u.rule.as_str(), u.path.as_str(), u.unset.as_deref())).collect();
    assert_eq!(
        unapplied,
        [("unset", "${NOPE}/**", Some("NOPE")), ("defaulted", "${REL:-relative}/**", None)]
    );
}

#[test]
fn every_embedded_policy_denies_credentials_and_sockets() {
    for name in embedded::NAMES {
        let policy = load_policy(embedded::source(name).unwrap(), name).unwrap();
        embedded_policy_denies_credentials_and_sockets(&policy);
    }
}

fn embedded_policy_denies_credentials_and_sockets(policy: &policies::Policy) {
    let r = FileRules::new(&policy.file_rules, Path::new(WS), &vars);
    let denied = [
        ("/home/agent/.ssh/id_rsa", "no-ssh-keys"),
        ("/home/agent/.ssh", "no-ssh-keys"),
        ("/home/agent/.aws/credentials", "no-cloud-credentials"),
        ("/home/agent/.config/gcloud/application_default_credentials.json", "no-cloud-credentials"),
        ("/home/agent/.kube/config", "no-cloud-credentials"),
        ("/var/run/secrets/kubernetes.io/serviceaccount/token", "no-cloud-credentials"),
        ("/var/run/docker.sock", "no-container-sockets"),
        ("/run/docker.sock", "no-container-sockets"),
        ("/run/containerd/containerd.sock", "no-container-sockets"),
        ("/run/user/1000/docker.sock", "no-container-sockets"),
    ];
    for (path, rule) in denied {
        for op in [FileOp::Read, FileOp::Write, FileOp::Stat] {
            let got = r.decide(Path::new(path), op);
            assert_eq!((got.verdict, got.rule), (FileVerdict::Deny, rule), "{}: {op:?} {path}", policy.name);
        }
    }
    // Start-up files stay readable (a shell or git inside the session reads them) but cannot
    // be changed, replaced or removed: they run on the host after the session.
    for path in [
        "/home/agent/.bashrc",
        "/home/agent/.profile",
        "/home/agent/.zshrc",
        "/home/agent/.gitconfig",
        "/home/agent/.config/systemd/user/evil.service",
        "/home/agent/.config/autostart/x.desktop",
    ] {
        for op in [
            FileOp::Write,
            FileOp::Create,
            FileOp::Delete,
            FileOp::RenameTo,
            FileOp::RenameFrom,
            FileOp::Chmod,
        ] {
            let got = r.decide(Path::new(path), op);
            assert_eq!(
                (got.verdict, got.rule),
                (FileVerdict::Deny, "no-startup-file-changes"),
                "{}: {op:?} {path}",
                policy.name
            );
        }
    }
    // A coarse layer judging the file alone: a rule naming it exactly settles it (over a tree
    // the same rule leaves what might lie below undecided).
    let bashrc = Path::new("/home/agent/.bashrc");
    assert_eq!(r.leaf(bashrc, FileOp::Write), Subtree::Denied("no-startup-file-changes"));
    assert_eq!(r.leaf(bashrc, FileOp::Read), Subtree::Clear);
    assert_eq!(r.subtree(bashrc, FileOp::Write), Subtree::Mixed);
    let ok = r.decide(Path::new("/work/ws/src/lib.rs"), FileOp::Write);
    assert_eq!((ok.verdict, ok.rule), (FileVerdict::Allow, DEFAULT_ALLOW_WORKSPACE));
}

#[test]
fn subtree_denial_for_coarse_layers() {
    let r = rules(POLICY);
    assert_eq!(r.denies_subtree(Path::new("/home/agent/.ssh"), FileOp::Read), Some("ssh"));
    assert_eq!(r.denies_subtree(Path::new("/home/agent/.ssh/keys"), FileOp::Write), Some("ssh"));
    // `.ssh` lies below /home/agent, but the rest of it is not denied.
    assert_eq!(r.denies_subtree(Path::new("/home/agent"), FileOp::Read), None);
    assert_eq!(r.denies_subtree(Path::new("/tmp"), FileOp::Exec), Some("no-exec-tmp"));
    assert_eq!(r.denies_subtree(Path::new("/tmp"), FileOp::Write), None);
    assert_eq!(r.denies_subtree(Path::new("/work/ws"), FileOp::Write), None);
    assert_eq!(r.denies_subtree(Path::new("/work/ws/vendor"), FileOp::Write), Some("ro-vendor"));
    // The defaults are not consulted: nothing explicit denies /usr.
    assert_eq!(r.denies_subtree(Path::new("/usr"), FileOp::Read), None);
    let everything = rules("file_rules:\n  - {name: none, decision: deny}\n");
    assert_eq!(everything.denies_subtree(Path::new("/usr"), FileOp::Read), Some("none"));
}

#[test]
fn subtree_judgement_tells_whole_partial_and_clear() {
    let r = rules(POLICY);
    let at = |p: &str, op| r.subtree(Path::new(p), op);
    assert_eq!(at("/home/agent/.ssh", FileOp::Read), Subtree::Denied("ssh"));
    // A tree holding `.ssh` is denied in part: a layer granting whole trees must split it.
    assert_eq!(at("/home/agent", FileOp::Read), Subtree::Mixed);
    assert_eq!(at("/home", FileOp::List), Subtree::Mixed);
    assert_eq!(at("/home/agent/.cargo", FileOp::Read), Subtree::Clear);
    assert_eq!(at("/usr", FileOp::Read), Subtree::Clear);
    assert_eq!(at("/work/ws", FileOp::Write), Subtree::Mixed);
    // An allow covering the tree first leaves nothing to deny below it.
    assert_eq!(at("/tmp", FileOp::Write), Subtree::Clear);
    let r = rules(
        "file_rules:\n  - {name: cargo, paths: ['~/.cargo/**'], decision: allow}\n  \
         - {name: rest, paths: ['~/**'], decision: deny}\n",
    );
    assert_eq!(r.subtree(Path::new("/home/agent"), FileOp::Read), Subtree::Mixed);
    assert_eq!(r.subtree(Path::new("/home/agent/.cargo"), FileOp::Read), Subtree::Clear);
    assert_eq!(r.subtree(Path::new("/home/agent/.ssh"), FileOp::Read), Subtree::Denied("rest"));
}

#[test]
fn symlink_escape_defaults_to_deny_and_takes_evaluate() {
    use policies::model::blocks::SymlinkEscape;
    assert_eq!(load_policy("{}", "t.yaml").unwrap().policies.symlink_escape, SymlinkEscape::Deny);
    let p = load_policy("policies: {symlink_escape: evaluate}", "t.yaml").unwrap();
    assert_eq!(p.policies.symlink_escape, SymlinkEscape::Evaluate);
    let refused = load_policy("policies: {symlink_escape: allow}", "t.yaml");
    assert!(refused.is_err_and(|e| e.to_string().contains("symlink_escape")));
}

#[test]
fn rules_reaching_into_the_workspace_are_found() {
    let ws = Path::new(WS);
    // Audits, soft deletes and denies below the workspace all need the per-operation layer;
    // the first such rule (in operation order: reads come first) is named.
    assert_eq!(rules(POLICY).rule_within(ws), Some("env-files"));
    assert_eq!(rules("file_rules:\n  - {name: t, paths: ['${WORKSPACE}/**'], operations: [delete], decision: soft_delete}\n").rule_within(ws), Some("t"));
    assert_eq!(
        rules("file_rules:\n  - {name: env, paths: ['/**/.env'], operations: [read], decision: deny}\n")
            .rule_within(ws),
        Some("env")
    );
    // A rule without paths covers the workspace too.
    assert_eq!(rules("file_rules:\n  - {name: none, decision: deny}\n").rule_within(ws), Some("none"));
    // Rules outside it, allows, and rules an earlier allow of the whole workspace shadows do not.
    for yaml in [
        "file_rules:\n  - {name: ssh, paths: ['~/.ssh/**'], decision: deny}\n",
        "file_rules:\n  - {name: ok, paths: ['${WORKSPACE}/**'], decision: allow}\n",
        "file_rules:\n  - {name: ok, paths: ['${WORKSPACE}/**'], decision: allow}\n  - {name: env, paths: ['/**/.env'], decision: deny}\n",
        "file_rules: []\n",
    ] {
        assert_eq!(rules(yaml).rule_within(ws), None, "{yaml}");
    }
    for name in embedded::NAMES {
        let policy = load_policy(embedded::source(name).unwrap(), name).unwrap();
        let r = FileRules::new(&policy.file_rules, ws, &vars);
        assert_eq!(r.rule_within(ws), None, "{name} reaches into a workspace outside the home");
    }
}
