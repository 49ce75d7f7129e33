//! AF_UNIX connects the decider pins: the supervisor resolves the path inside the tracee's root
//! (or from its cwd) with no symlink followed and connects the tracee's socket itself. A
//! directory swapped for a symlink by a racing thread never lands on the decoy behind it.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Backend, supervised, table};
use redirect::decide::UnixRefusal;
use redirect::seccomp::Exit;
use redirect::testing::{TraceeExit, child_fail};
use redirect::{Action, ConnectDecider, SockInfo, UnixAddr};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};

/// Pins pathnames under `allowed` and every relative path; refuses other pathnames.
struct PinUnder(PathBuf);

impl ConnectDecider for PinUnder {
    fn decide(&self, _dst: std::net::SocketAddr, _sock: SockInfo, _pid: u32) -> Action {
        Action::Deny(libc::ENETUNREACH)
    }

    fn decide_unix(&self, addr: &UnixAddr, _sock: SockInfo, _pid: u32) -> Action {
        match addr {
            UnixAddr::Pathname(p) if p.first() != Some(&b'/') => Action::ConnectUnixPinned,
            UnixAddr::Pathname(p) if Path::new(std::str::from_utf8(p).unwrap_or("")).starts_with(&self.0) => {
                Action::ConnectUnixPinned
            }
            _ => Action::Deny(libc::EACCES),
        }
    }

    fn unix_refused(&self, _addr: &UnixAddr, why: UnixRefusal, _pid: u32) {
        eprintln!("refused: {why:?}");
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("agentsh-unix-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A listener that greets every connection with `greeting` and echoes one byte back, until the
/// returned flag is set and one more connection wakes it.
fn serve(listener: UnixListener, greeting: u8) -> (Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let t = std::thread::spawn(move || {
        let mut served = 0;
        for s in listener.incoming() {
            if flag.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut s) = s else { continue };
            served += 1;
            let _ = s.write_all(&[greeting]);
            let mut b = [0u8; 1];
            s.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&b);
            }
        }
        served
    });
    (stop, t)
}

fn stop_serving(path: &Path, (stop, t): (Arc<AtomicBool>, std::thread::JoinHandle<usize>)) -> usize {
    stop.store(true, Ordering::SeqCst);
    let _ = UnixStream::connect(path);
    t.join().unwrap()
}

/// Connects a fresh AF_UNIX stream socket to `path` (raw bytes, relative or absolute).
fn connect(path: &[u8]) -> Result<std::os::fd::OwnedFd, i32> {
    let fd =
        rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).map_err(|e| e.raw_os_error())?;
    let addr = SocketAddrUnix::new(path).map_err(|e| e.raw_os_error())?;
    rustix::net::connect(&fd, &addr).map_err(|e| e.raw_os_error())?;
    Ok(fd)
}

/// Connects, expects `greeting`, and has one byte echoed back.
fn exchange(path: &[u8], greeting: u8) -> Result<(), i32> {
    let fd = connect(path).map_err(|e| child_fail(10, &format!("connect {path:?}: errno {e}")))?;
    let mut b = [0u8; 1];
    if rustix::io::read(&fd, &mut b).ok() != Some(1) || b[0] != greeting {
        return Err(child_fail(11, &format!("greeting {b:?}, want {greeting}")));
    }
    if rustix::io::write(&fd, b"x").ok() != Some(1)
        || rustix::io::read(&fd, &mut b).ok() != Some(1)
        || b != *b"x"
    {
        return Err(child_fail(12, "echo"));
    }
    Ok(())
}

fn expect_errno(path: &[u8], want: i32) -> Result<(), i32> {
    match connect(path) {
        Err(e) if e == want => Ok(()),
        other => {
            Err(child_fail(13, &format!("connect {path:?}: {:?}, want errno {want}", other.map(|_| ()))))
        }
    }
}

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_encoded_bytes().to_vec()
}

fn run(backend: Backend, decider: PinUnder, body: impl FnOnce() -> Result<(), i32>) {
    let (exit, sup) = supervised(backend, &backend.program(), decider, table(), || body().err().unwrap_or(0));
    assert_eq!(exit, TraceeExit::Code(0));
    assert_eq!(sup, Exit::TraceesGone);
}

fn allowed_path_connects_and_exchanges_a_byte(backend: Backend) {
    let dir = Scratch::new("allowed");
    let sock = dir.0.join("s.sock");
    let server = serve(UnixListener::bind(&sock).unwrap(), b'G');
    let (path, outside) = (bytes(&sock), bytes(&std::env::temp_dir().join("elsewhere.sock")));
    run(backend, PinUnder(dir.0.clone()), || {
        exchange(&path, b'G')?;
        expect_errno(&outside, libc::EACCES)?;
        expect_errno(&bytes(&dir.0.join("missing.sock")), libc::ENOENT)?;
        // A directory is not a socket: what the kernel itself answers.
        expect_errno(&bytes(&dir.0), libc::ECONNREFUSED)
    });
    assert_eq!(stop_serving(&sock, server), 1);
}

fn symlinks_and_hard_links_are_refused(backend: Backend) {
    let dir = Scratch::new("links");
    let sock = dir.0.join("s.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::os::unix::fs::symlink(&sock, dir.0.join("link.sock")).unwrap();
    std::os::unix::fs::symlink(&dir.0, dir.0.join("dirlink")).unwrap();
    let (link, via_dir) = (bytes(&dir.0.join("link.sock")), bytes(&dir.0.join("dirlink/s.sock")));
    run(backend, PinUnder(dir.0.clone()), || {
        expect_errno(&link, libc::ELOOP)?;
        expect_errno(&via_dir, libc::ELOOP)
    });
    assert!(listener.accept().is_err(), "nothing reached the socket through a symlink");

    let twice = dir.0.join("twice.sock");
    std::fs::hard_link(&sock, &twice).unwrap();
    let twice = bytes(&twice);
    let path = bytes(&sock);
    run(backend, PinUnder(dir.0.clone()), || {
        expect_errno(&twice, libc::EACCES)?;
        expect_errno(&path, libc::EACCES)
    });
    assert!(listener.accept().is_err(), "nothing reached a socket with two names");
}

fn relative_paths_resolve_against_the_tracee_cwd(backend: Backend) {
    let dir = Scratch::new("relative");
    let sub = dir.0.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let sock = sub.join("s.sock");
    let server = serve(UnixListener::bind(&sock).unwrap(), b'R');
    // The supervisor's own cwd has no such socket: only the tracee's cwd makes these work.
    let cwd = bytes(&sub);
    run(backend, PinUnder(dir.0.clone()), || {
        rustix::process::chdir(cwd.as_slice()).map_err(|_| child_fail(20, "chdir"))?;
        exchange(b"s.sock", b'R')?;
        exchange(b"./../sub/s.sock", b'R')?;
        expect_errno(b"../s.sock", libc::ENOENT)
    });
    assert_eq!(stop_serving(&sock, server), 2);
}

fn a_directory_swapped_for_a_symlink_never_reaches_the_decoy(backend: Backend) {
    const ROUNDS: usize = 400;
    let base = Scratch::new("race");
    let decoy_dir = Scratch::new("race-decoy");
    let allowed = base.0.join("allowed");
    std::fs::create_dir_all(allowed.join("dir")).unwrap();
    let good = allowed.join("dir/s.sock");
    let server = serve(UnixListener::bind(&good).unwrap(), b'G');
    let decoy = UnixListener::bind(decoy_dir.0.join("s.sock")).unwrap();
    decoy.set_nonblocking(true).unwrap();
    // `dir` and `alt` trade places atomically: a real directory, or a symlink to the decoy's.
    let (dir, alt) = (allowed.join("dir"), allowed.join("alt"));
    std::os::unix::fs::symlink(&decoy_dir.0, &alt).unwrap();
    let flipping = Arc::new(AtomicBool::new(true));
    let flipper = {
        let (dir, alt, flipping) = (dir.clone(), alt.clone(), flipping.clone());
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while flipping.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &dir,
                    rustix::fs::CWD,
                    &alt,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .expect("RENAME_EXCHANGE");
                flips += 1;
            }
            flips
        })
    };
    let path = bytes(&good);
    run(backend, PinUnder(allowed.clone()), || {
        let (mut connected, mut refused) = (0, 0);
        for _ in 0..ROUNDS {
            match connect(&path) {
                Ok(fd) => {
                    // The decoy never greets: a connection to it fails here instead of hanging.
                    let five = Some(std::time::Duration::from_secs(5));
                    let _ = rustix::net::sockopt::set_socket_timeout(
                        &fd,
                        rustix::net::sockopt::Timeout::Recv,
                        five,
                    );
                    let mut b = [0u8; 1];
                    if rustix::io::read(&fd, &mut b).ok() != Some(1) || b != *b"G" {
                        return Err(child_fail(30, &format!("connected, but greeted with {b:?}")));
                    }
                    connected += 1;
                }
                Err(libc::ELOOP) => refused += 1,
                Err(e) => return Err(child_fail(31, &format!("unexpected errno {e}"))),
            }
        }
        eprintln!("race: {connected} connected to the real socket, {refused} refused (ELOOP)");
        Ok(())
    });
    flipping.store(false, Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    assert!(flips > 0, "the flipper never ran");
    assert!(decoy.accept().is_err(), "the decoy listener accepted a connection");
    // Leave `dir` a real directory so the wake-up connect reaches the server.
    if std::fs::symlink_metadata(&dir).unwrap().file_type().is_symlink() {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &dir,
            rustix::fs::CWD,
            &alt,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .unwrap();
    }
    let served = stop_serving(&good, server);
    assert!(served <= ROUNDS, "served {served}");
}

common::per_backend!(
    allowed_path_connects_and_exchanges_a_byte,
    symlinks_and_hard_links_are_refused,
    relative_paths_resolve_against_the_tracee_cwd,
    a_directory_swapped_for_a_symlink_never_reaches_the_decoy
);
