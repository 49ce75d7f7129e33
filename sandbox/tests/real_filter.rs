//! The notify-fd hand-off under the real sandbox filter (`FilterSpec::sandbox_default`), which
//! traps `sendmsg`, `connect`, `sendto` and `getpeername`. A hand-off that used any of them after
//! installing the filter would wait for a supervisor that cannot exist yet; these tests bound
//! every run so such a regression fails instead of hanging.
mod common;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use common::{StateDir, privileged, sh};
use redirect::filter::{FilterSpec, compile};
use redirect::seccomp::Supervisor;
use redirect::{Action, OriginalDstTable};
use sandbox::{LaunchSpec, Stdio};

/// How long the command may run once resumed before it is killed and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// Backstop for the whole run. `launch` and `resume` give up on their own after 30 s each and
/// then kill the sandbox, so the worker normally reports well before this.
const DEADLINE: Duration = Duration::from_secs(120);

fn real_filter() -> Vec<u8> {
    let program = compile(&FilterSpec::sandbox_default()).expect("compile the sandbox filter");
    program.as_bytes().to_vec()
}

/// Launches `spec` under the real filter with a supervisor that lets every call through, and
/// returns the exit code and stdout. Panics when the hand-off or the command does not finish.
fn run_supervised(mut spec: LaunchSpec) -> (i32, String) {
    spec.seccomp = Some(real_filter());
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    spec.stdout = Stdio::Fd(OwnedFd::from(out_w));
    let (tx, rx) = mpsc::channel();
    // The whole run happens on a worker so a deadlock shows up as a failure here, not a hang.
    std::thread::spawn(move || {
        let result = (|| -> Result<i32, String> {
            let launched = sandbox::launch(&spec);
            drop(spec); // our copy of stdout's write end, so the reader sees end-of-file
            let mut launched = launched.map_err(|e| format!("launch: {e}"))?;
            let notify = launched.notify_fd.take().ok_or("no notify fd")?;
            let decider = |_dst, _sock, _pid| Action::Continue;
            let table = Arc::new(OriginalDstTable::new(16, Duration::from_secs(60)));
            let supervisor = Supervisor::new(notify, Arc::new(decider), table)
                .spawn()
                .map_err(|e| format!("spawn supervisor: {e}"))?;
            launched.resume().map_err(|e| format!("resume: {e}"))?;
            let Some(code) = launched.wait_timeout(RUN_LIMIT).map_err(|e| format!("wait: {e}"))? else {
                launched.kill().map_err(|e| format!("kill: {e}"))?;
                return Err(format!("the command did not finish within {RUN_LIMIT:?}"));
            };
            // Every tracee is gone, so the loop has ended or ends now.
            supervisor.stop().map_err(|e| format!("supervisor: {e}"))?;
            Ok(code)
        })();
        let _ = tx.send(result);
    });
    let code = match rx.recv_timeout(DEADLINE) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("the sandbox did not finish within {DEADLINE:?} under the real filter"),
    };
    let mut stdout = String::new();
    out_r.read_to_string(&mut stdout).unwrap();
    (code, stdout)
}

#[test]
fn bin_true_runs_under_the_real_filter() {
    if !privileged("bin_true_runs_under_the_real_filter") {
        return;
    }
    let state = StateDir::new();
    let mut spec = LaunchSpec::new(["/bin/true"], &state.0);
    spec.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    spec.resolv_conf = "nameserver 127.0.0.53\n".into();
    spec.stdin = Stdio::Null;
    assert_eq!(run_supervised(spec), (0, String::new()));
}

#[test]
fn a_shell_runs_under_the_real_filter() {
    if !privileged("a_shell_runs_under_the_real_filter") {
        return;
    }
    let state = StateDir::new();
    let mut spec = sh("echo ok", &state);
    spec.argv[0] = "/bin/sh".into();
    // As the gateway launches: the listeners, the command's pidfd and the notify fd's number
    // share the launch socket, in that order.
    spec.gateway_listeners = true;
    assert_eq!(run_supervised(spec), (0, "ok\n".to_string()));
}

#[test]
fn the_real_filter_is_the_only_one_and_is_active() {
    if !privileged("the_real_filter_is_the_only_one_and_is_active") {
        return;
    }
    let state = StateDir::new();
    let spec = sh("grep '^Seccomp' /proc/self/status", &state);
    let (code, out) = run_supervised(spec);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Seccomp:\t2\n"), "{out}");
    assert!(out.contains("Seccomp_filters:\t1\n"), "{out}");
}
