//! The probes. Each runs in the calling process and may change it (a seccomp filter, a new
//! namespace, a dropped capability), so callers run each in a fresh process of its own:
//! `agentsh detect` re-executes itself once per probe. Every probe tries the real thing and
//! undoes what it made (cgroups, mounts, children).

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use super::{ProbeName, ProbeResult};

/// Run `name` here (see the module docs: it changes this process).
pub fn run(name: ProbeName) -> ProbeResult {
    match name {
        ProbeName::SeccompBasic => seccomp_basic(),
        ProbeName::SeccompNotify => seccomp_notify(),
        ProbeName::Landlock => landlock(),
        ProbeName::Fuse => fuse(),
        ProbeName::Ptrace => ptrace(),
        ProbeName::Ebpf => ebpf(),
        ProbeName::NetworkNamespace => unshare(libc::CLONE_NEWNET, "network"),
        ProbeName::PidNamespace => unshare(libc::CLONE_NEWPID, "PID"),
        ProbeName::CgroupV2 => cgroup_v2(),
        ProbeName::CapabilityDrop => capability_drop(),
    }
}

fn errno(what: &str) -> ProbeResult {
    ProbeResult::no(format!("{what}: {}", io::Error::last_os_error()))
}

fn seccomp_basic() -> ProbeResult {
    let action: u32 = libc::SECCOMP_RET_USER_NOTIF;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 through the pointer, which outlives the call.
    let r =
        unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_GET_ACTION_AVAIL, 0, &action as *const u32) };
    if r == 0 {
        ProbeResult::ok("SECCOMP_RET_USER_NOTIF is available")
    } else {
        errno("SECCOMP_GET_ACTION_AVAIL")
    }
}

/// Classic BPF for x86_64: `getppid` → user notification, everything else allowed (a foreign
/// architecture is allowed too: this filter only probes).
fn notify_getppid_filter() -> Vec<libc::sock_filter> {
    let stmt = |code: u16, k: u32| libc::sock_filter { code, jt: 0, jf: 0, k };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    vec![
        stmt(ld, 4), // seccomp_data.arch
        jeq(AUDIT_ARCH_X86_64, 0, 3),
        stmt(ld, 0), // seccomp_data.nr
        jeq(libc::SYS_getppid as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_USER_NOTIF),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Install a user-notify filter, trap `getppid` on another thread, answer it through the
/// listener with a value the kernel never returns, and check the thread got it.
fn seccomp_notify() -> ProbeResult {
    const ANSWER: i64 = 424_242;
    let filter = notify_getppid_filter();
    let prog =
        libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut libc::sock_filter };
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return errno("PR_SET_NO_NEW_PRIVS");
    }
    // SAFETY: `prog` points at `filter`, both alive across the call; the kernel copies them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return errno("seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER)");
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let listener = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: plain getppid; the filter traps it and the main thread answers.
    let caller = std::thread::spawn(|| unsafe { libc::syscall(libc::SYS_getppid) });
    // SAFETY: seccomp_notif is plain data; zeroed is its documented initial state for RECV.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: NOTIF_RECV writes one seccomp_notif into `req`.
    if unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
        return errno("SECCOMP_IOCTL_NOTIF_RECV");
    }
    let resp = libc::seccomp_notif_resp { id: req.id, val: ANSWER, error: 0, flags: 0 };
    // SAFETY: NOTIF_SEND reads one seccomp_notif_resp.
    if unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) } != 0 {
        return errno("SECCOMP_IOCTL_NOTIF_SEND");
    }
    match caller.join() {
        Ok(ANSWER) => ProbeResult::ok("filter installed; a trapped call was answered through the listener"),
        Ok(other) => ProbeResult::no(format!("the trapped call returned {other}, not the listener's answer")),
        Err(_) => ProbeResult::no("the trapped thread panicked"),
    }
}

fn landlock() -> ProbeResult {
    use landlock::{ABI, Access, AccessFs, Ruleset, RulesetAttr};
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute only queries the ABI.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, /* _VERSION */
        )
    };
    if abi < 0 {
        return errno("landlock_create_ruleset(VERSION)");
    }
    let created = Ruleset::default().handle_access(AccessFs::from_all(ABI::V1)).and_then(|r| r.create());
    match created {
        Ok(_) => ProbeResult::ok(format!("ruleset created; ABI {abi}")).fact("abi", abi.to_string()),
        Err(e) => ProbeResult::no(format!("ABI {abi}, but creating a ruleset failed: {e}"))
            .fact("abi", abi.to_string()),
    }
}

fn temp_dir(label: &str) -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("agentsh-detect-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default()
}

/// Mount FUSE in a private mount namespace (never visible to the host), then unmount.
fn fuse() -> ProbeResult {
    // SAFETY: plain unshare of this (single-purpose) process's mount namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return errno("unshare(CLONE_NEWNS) for a private mount");
    }
    let root = c"/";
    // SAFETY: remount / as private so nothing propagates to the host.
    if unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    } != 0
    {
        return errno("making / private");
    }
    let dev = match std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(f) => f,
        Err(e) => return ProbeResult::no(format!("/dev/fuse: {e}")),
    };
    let dir = match temp_dir("fuse") {
        Ok(d) => d,
        Err(e) => return ProbeResult::no(format!("mount point: {e}")),
    };
    let opts = CString::new(format!("fd={},rootmode=40000,user_id=0,group_id=0", dev.as_raw_fd()))
        .unwrap_or_default();
    let target = cstr(&dir);
    // SAFETY: every pointer is a live C string; a fuse mount returns at once (INIT is async).
    let r = unsafe {
        libc::mount(
            c"agentsh-detect".as_ptr(),
            target.as_ptr(),
            c"fuse".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            opts.as_ptr().cast(),
        )
    };
    let result = if r == 0 {
        ProbeResult::ok("mounted /dev/fuse (private mount namespace)")
    } else {
        errno("mount -t fuse")
    };
    // SAFETY: detach whatever was mounted there; harmless when nothing was.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    drop(dev);
    let _ = std::fs::remove_dir(&dir);
    result
}

/// Seize a child (`sleep`) and let it go.
fn ptrace() -> ProbeResult {
    let mut child = match std::process::Command::new("sleep").arg("5").spawn() {
        Ok(c) => c,
        Err(e) => return ProbeResult::no(format!("starting a child: {e}")),
    };
    let pid = child.id() as libc::pid_t;
    // SAFETY: PTRACE_SEIZE of our own child with no options; data and addr are unused.
    let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) };
    let result = if r == 0 {
        let scope =
            std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").map(|s| s.trim().to_string());
        ProbeResult::ok(format!(
            "seized a child (yama ptrace_scope {})",
            scope.as_deref().unwrap_or("absent")
        ))
    } else {
        errno("PTRACE_SEIZE")
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// `union bpf_attr` as far as BPF_PROG_LOAD reads it (the kernel zero-checks the rest).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH / BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const CAP_SYS_ADMIN: libc::c_ulong = 21;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;

fn bpf<T>(cmd: libc::c_long, attr: &T) -> libc::c_long {
    // SAFETY: `attr` is a live, fully initialised bpf_attr prefix of the size passed.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, std::mem::size_of::<T>()) }
}

/// Load `r0 = 1; exit` as a cgroup/connect4 program and attach it to a throwaway cgroup under
/// the cgroup v2 hierarchy (no process is ever in it), then detach and remove the cgroup.
fn ebpf() -> ProbeResult {
    // BPF_MOV64_IMM(r0, 1); BPF_EXIT_INSN()
    let insns: [u64; 2] =
        [u64::from_le_bytes([0xb7, 0x00, 0, 0, 1, 0, 0, 0]), u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0])];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..14].copy_from_slice(b"agentsh_detect");
    let load = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_INET4_CONNECT,
        ..ProgLoad::default()
    };
    let prog = bpf(BPF_PROG_LOAD, &load);
    if prog < 0 {
        return errno("BPF_PROG_LOAD (cgroup/connect4)");
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let Some(root) = crate::cgroup::unified_root().ok() else {
        return ProbeResult::no("program loaded, but no cgroup v2 hierarchy to attach it to");
    };
    let cg = root.join(format!("agentsh-detect-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&cg) {
        return ProbeResult::no(format!("program loaded, but {}: {e}", cg.display()));
    }
    let result = match std::fs::File::open(&cg) {
        Err(e) => ProbeResult::no(format!("opening {}: {e}", cg.display())),
        Ok(dir) => {
            let attach = ProgAttach {
                target_fd: dir.as_raw_fd() as u32,
                attach_bpf_fd: prog.as_raw_fd() as u32,
                attach_type: BPF_CGROUP_INET4_CONNECT,
                attach_flags: 0,
            };
            if bpf(BPF_PROG_ATTACH, &attach) == 0 {
                bpf(BPF_PROG_DETACH, &attach);
                ProbeResult::ok(format!("cgroup/connect4 loaded and attached to {}", cg.display()))
            } else {
                errno("BPF_PROG_ATTACH")
            }
        }
    };
    let _ = std::fs::remove_dir(&cg);
    result
}

fn unshare(flag: libc::c_int, what: &str) -> ProbeResult {
    // SAFETY: plain unshare of this single-purpose process.
    if unsafe { libc::unshare(flag) } == 0 {
        ProbeResult::ok(format!("created a {what} namespace"))
    } else {
        errno(&format!("unshare({what} namespace)"))
    }
}

fn cgroup_v2() -> ProbeResult {
    let root = match crate::cgroup::unified_root() {
        Ok(r) => r,
        Err(e) => return ProbeResult::no(format!("no cgroup v2 hierarchy: {e}")),
    };
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let probe = root.join(format!("agentsh-detect-cg-{}", std::process::id()));
    let made = std::fs::create_dir(&probe);
    let _ = std::fs::remove_dir(&probe);
    let r = match made {
        Ok(()) => ProbeResult::ok(format!("created a cgroup under {}", root.display())),
        Err(e) => ProbeResult::no(format!("creating a cgroup under {}: {e}", root.display())),
    };
    r.fact("mount", root.display().to_string()).fact("controllers", controllers.trim())
}

/// Drop CAP_SYS_ADMIN from the bounding set and check it is gone.
fn capability_drop() -> ProbeResult {
    // SAFETY: plain prctls on this single-purpose process.
    let (dropped, still) = unsafe {
        (
            libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0),
            libc::prctl(libc::PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0),
        )
    };
    if dropped != 0 {
        return errno("PR_CAPBSET_DROP");
    }
    if still == 0 {
        ProbeResult::ok("dropped CAP_SYS_ADMIN from the bounding set")
    } else {
        ProbeResult::no("CAP_SYS_ADMIN still in the bounding set after the drop")
    }
}

/// How long the caller should let one probe run before calling it hung.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
