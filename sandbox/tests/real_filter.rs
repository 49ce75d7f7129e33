//! The notify-fd hand-off under the real sandbox filter (`FilterSpec::sandbox_default`), which
//! traps `sendmsg`, `connect`, `sendto` and `getpeername`. A hand-off that used any of them after
//! installing the filter would wait for a supervisor that cannot exist yet; these tests bound
//! every run so such a regression fails instead of hanging. Each runs under both listeners: a
//! user-notify supervisor, and a ptrace tracer seizing the command by its host pid.
mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use common::{StateDir, privileged, sh};
use redirect::filter::{FilterSpec, TrapAction, compile_with};
use redirect::ptrace::Tracer;
use redirect::seccomp::Supervisor;
use redirect::{Action, OriginalDst, OriginalDstTable};
use sandbox::{LaunchSpec, Launched, SeccompListener, Stdio};

const LISTENERS: [SeccompListener; 2] = [SeccompListener::UserNotify, SeccompListener::Trace];
/// Connects to it are redirected to the sandbox's IPv4 gateway listener.
const REDIRECTED: &str = "203.0.113.5:443";

/// How long the command may run once resumed before it is killed and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// Backstop for the whole run. `launch` and `resume` give up on their own after 30 s each and
/// then kill the sandbox, so the worker normally reports well before this.
const DEADLINE: Duration = Duration::from_secs(120);

fn real_filter(listener: SeccompListener) -> Vec<u8> {
    let trap = match listener {
        SeccompListener::UserNotify => TrapAction::UserNotify,
        SeccompListener::Trace => TrapAction::Trace,
    };
    let program = compile_with(&FilterSpec::sandbox_default(), trap).expect("compile the sandbox filter");
    program.as_bytes().to_vec()
}

/// Starts answering `launched`'s trapped calls through `listener`: connects to [`REDIRECTED`]
/// go to its first gateway listener, everything else continues. Returns how to stop.
fn supervise(
    listener: SeccompListener,
    launched: &mut Launched,
    table: Arc<OriginalDstTable>,
) -> Result<Box<dyn FnOnce() -> Result<(), String> + Send>, String> {
    let gw: Option<SocketAddr> = launched.listeners.first().and_then(|l| l.local_addr().ok());
    let decider = Arc::new(move |dst: SocketAddr, _sock, _pid| match gw {
        Some(gw) if dst == REDIRECTED.parse::<SocketAddr>().unwrap() => Action::Redirect(gw),
        _ => Action::Continue,
    });
    Ok(match listener {
        SeccompListener::UserNotify => {
            let notify = launched.notify_fd.take().ok_or("no notify fd")?;
            let handle =
                Supervisor::new(notify, decider, table).spawn().map_err(|e| format!("supervisor: {e}"))?;
            Box::new(move || handle.stop().map(drop).map_err(|e| format!("supervisor: {e}")))
        }
        SeccompListener::Trace => {
            if launched.notify_fd.is_some() {
                return Err("a notify fd in trace mode".into());
            }
            let pid = launched.command_pid.ok_or("no command pid")?;
            let handle = Tracer::new(decider, table).spawn(pid).map_err(|e| format!("seize: {e}"))?;
            Box::new(move || handle.stop().map(drop).map_err(|e| format!("tracer: {e}")))
        }
    })
}

/// Launches `spec` under the real filter answered through `listener` (see [`supervise`]), and
/// returns the exit code and stdout. With gateway listeners, the first one's connections are
/// answered: their original destination goes to `accepted`, and they get "ok". Panics when the
/// hand-off or the command does not finish.
fn run_supervised(
    listener: SeccompListener,
    mut spec: LaunchSpec,
    accepted: Option<mpsc::Sender<Option<OriginalDst>>>,
) -> (i32, String) {
    spec.seccomp = Some(real_filter(listener));
    spec.seccomp_listener = listener;
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    spec.stdout = Stdio::Fd(OwnedFd::from(out_w));
    let (tx, rx) = mpsc::channel();
    // The whole run happens on a worker so a deadlock shows up as a failure here, not a hang.
    std::thread::spawn(move || {
        let result = (|| -> Result<i32, String> {
            let launched = sandbox::launch(&spec);
            drop(spec); // our copy of stdout's write end, so the reader sees end-of-file
            let mut launched = launched.map_err(|e| format!("launch: {e}"))?;
            let table = Arc::new(OriginalDstTable::new(16, Duration::from_secs(60)));
            if let (Some(tx), Some(gw)) = (accepted, launched.listeners.first()) {
                let (gw, table) = (gw.try_clone().map_err(|e| e.to_string())?, table.clone());
                std::thread::spawn(move || {
                    while let Ok((mut s, peer)) = gw.accept() {
                        let _ = tx.send(table.take(peer));
                        let _ = s.write_all(b"ok");
                    }
                });
            }
            let stop = supervise(listener, &mut launched, table)?;
            launched.resume().map_err(|e| format!("resume: {e}"))?;
            let Some(code) = launched.wait_timeout(RUN_LIMIT).map_err(|e| format!("wait: {e}"))? else {
                launched.kill().map_err(|e| format!("kill: {e}"))?;
                return Err(format!("the command did not finish within {RUN_LIMIT:?}"));
            };
            // Every tracee is gone, so the loop has ended or ends now.
            stop()?;
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
    for listener in LISTENERS {
        let mut spec = LaunchSpec::new(["/bin/true"], &state.0);
        spec.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
        spec.resolv_conf = "nameserver 127.0.0.53\n".into();
        spec.stdin = Stdio::Null;
        assert_eq!(run_supervised(listener, spec, None), (0, String::new()), "{listener:?}");
    }
}

#[test]
fn a_shell_runs_under_the_real_filter() {
    if !privileged("a_shell_runs_under_the_real_filter") {
        return;
    }
    let state = StateDir::new();
    for listener in LISTENERS {
        let mut spec = sh("echo ok", &state);
        spec.argv[0] = "/bin/sh".into();
        // As the gateway launches: the listeners, the command's pidfd and the notify fd's number
        // (or the word that the filter is installed) share the launch socket, in that order.
        spec.gateway_listeners = true;
        assert_eq!(run_supervised(listener, spec, None), (0, "ok\n".to_string()), "{listener:?}");
    }
}

#[test]
fn the_real_filter_is_the_only_one_and_is_active() {
    if !privileged("the_real_filter_is_the_only_one_and_is_active") {
        return;
    }
    let state = StateDir::new();
    for listener in LISTENERS {
        let spec = sh("grep '^Seccomp' /proc/self/status", &state);
        let (code, out) = run_supervised(listener, spec, None);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("Seccomp:\t2\n"), "{out}");
        assert!(out.contains("Seccomp_filters:\t1\n"), "{out}");
    }
}

/// End to end through the sandbox: the command's connect to [`REDIRECTED`] lands on the gateway
/// listener with its original destination recorded, under either listener.
#[test]
fn a_connect_is_redirected_to_the_gateway_listener() {
    if !privileged("a_connect_is_redirected_to_the_gateway_listener") {
        return;
    }
    let state = StateDir::new();
    for listener in LISTENERS {
        let script = "exec 3<>/dev/tcp/203.0.113.5/443 && read -r -n 2 r <&3 && echo \"$r\"";
        let mut spec = sh(script, &state);
        spec.argv[0] = "bash".into();
        spec.gateway_listeners = true;
        let (tx, rx) = mpsc::channel();
        assert_eq!(run_supervised(listener, spec, Some(tx)), (0, "ok\n".to_string()), "{listener:?}");
        let original = rx.recv_timeout(Duration::from_secs(5)).expect("the gateway accepted");
        let original = original.unwrap_or_else(|| panic!("{listener:?}: no original destination"));
        assert_eq!(original.dst, REDIRECTED.parse().unwrap(), "{listener:?}");
    }
}
