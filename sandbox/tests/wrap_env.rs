//! `sandbox::wrap`: a filtered child released with an environment runs the command with exactly
//! that environment; released plainly, with the caller's; an environment too large to lay out
//! is refused and the child never runs.

use std::ffi::OsString;

use sandbox::wrap::{ENV_MAX, spawn_filtered};

/// A one-instruction filter that allows every call (the child still gets a listener).
fn allow_all() -> Vec<u8> {
    let mut insn = Vec::new();
    insn.extend_from_slice(&0x06u16.to_ne_bytes()); // BPF_RET | BPF_K
    insn.extend_from_slice(&[0, 0]);
    insn.extend_from_slice(&0x7fff_0000u32.to_ne_bytes()); // SECCOMP_RET_ALLOW
    insn
}

/// Runs `sh -c script` under the filter, released by `release`, with `$OUT` naming a file
/// for its output (passed as `$0`, so the environment stays the test's to choose); its exit
/// code (-1 when the release failed) and what it wrote there.
fn run(
    tag: &str,
    script: &str,
    release: impl FnOnce(&mut sandbox::wrap::Filtered) -> std::io::Result<()>,
) -> (i32, String) {
    let out = std::env::temp_dir().join(format!("agentsh-wrap-env-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let script = format!("OUT=\"$0\"; {{ {script}; }} > \"$OUT\"");
    let argv: Vec<OsString> = vec!["sh".into(), "-c".into(), script.into(), out.clone().into_os_string()];
    let mut child = spawn_filtered(&argv, &allow_all()).expect("spawned");
    let code = match release(&mut child) {
        Ok(()) => child.wait().expect("waited"),
        Err(_) => {
            drop(child);
            -1
        }
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    (code, text)
}

#[test]
fn the_environment_given_at_release_is_the_commands_whole_environment() {
    let script = "echo \"a=$WRAP_A b=$WRAP_B home=${HOME:-unset}\"; echo \"path=$PATH\"";
    let env: Vec<(OsString, OsString)> = vec![
        ("WRAP_A".into(), "one two".into()),
        ("WRAP_B".into(), "x=y".into()),
        ("PATH".into(), "/usr/bin:/bin".into()),
    ];
    let (code, out) = run("given", script, |c| c.release_with_env(&env));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "a=one two b=x=y home=unset\npath=/usr/bin:/bin\n");

    let (code, out) = run("inherited", script, |c| c.release());
    assert_eq!(code, 0, "{out}");
    let path = std::env::var("PATH").unwrap_or_default();
    assert!(out.starts_with("a= b= home=") && out.ends_with(&format!("path={path}\n")), "{out}");
}

#[test]
fn an_environment_that_cannot_be_laid_out_is_refused_and_nothing_runs() {
    let huge = vec![("BIG".into(), OsString::from("x".repeat(ENV_MAX)))];
    let (code, out) = run("huge", "echo ran", |c| c.release_with_env(&huge));
    assert_eq!((code, out.as_str()), (-1, ""));
    let bad = vec![("A=B".into(), OsString::from("c"))];
    let (code, out) = run("bad", "echo ran", |c| c.release_with_env(&bad));
    assert_eq!((code, out.as_str()), (-1, ""));
}
