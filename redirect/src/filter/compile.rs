//! Compiles a [`FilterSpec`] with libseccomp and exports it as a raw classic-BPF program, then
//! checks that program with a pure function before anyone can install it.

use std::io::{Read, Seek, SeekFrom};

use libseccomp::{ScmpAction, ScmpArgCompare as Cmp, ScmpCompareOp as Op, ScmpFilterContext, ScmpSyscall};

use super::spec::{FilterSpec, ForeignArch, MAX_NETLINK_PROTOCOL, SpecError};

/// Size of one `struct sock_filter`.
pub const INSN_LEN: usize = 8;
/// `BPF_MAXINSNS`: the kernel refuses longer programs.
pub const MAX_INSNS: usize = 4096;
/// `sizeof(struct seccomp_data)`: loads beyond it are invalid.
const SECCOMP_DATA_LEN: u32 = 64;
/// An `int` argument: the kernel ignores the upper 32 bits of the register, so must the filter,
/// or `0x1_0000_0011` would slip past a check for 17 (AF_PACKET).
const INT_MASK: u64 = 0xffff_ffff;
/// `SOCK_TYPE_MASK`: the kernel strips SOCK_NONBLOCK/SOCK_CLOEXEC with it.
const SOCK_TYPE_MASK: u64 = 0xf;
/// `SOCK_PACKET` (10): the obsolete packet type on AF_INET, refused like SOCK_RAW.
const SOCK_PACKET: i32 = 10;

/// Why a filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The spec failed [`FilterSpec::check`].
    #[error("invalid filter spec: {0}")]
    Spec(#[from] SpecError),
    /// libseccomp does not know this syscall on the native architecture.
    #[error("libseccomp does not know syscall {0:?}")]
    UnknownSyscall(String),
    /// libseccomp refused a rule or the export.
    #[error("libseccomp: {context}: {source}")]
    Seccomp {
        /// What was being done.
        context: String,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// Reading the exported program back failed.
    #[error("reading exported BPF: {0}")]
    Io(#[from] std::io::Error),
    /// The exported program failed [`check_program`].
    #[error("exported BPF program is malformed: {0}")]
    Program(#[from] ProgramError),
}

/// A classic-BPF seccomp program: bytes of `struct sock_filter`, checked by [`check_program`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfProgram {
    bytes: Vec<u8>,
}

impl BpfProgram {
    /// Wraps raw bytes after [`check_program`] accepts them.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ProgramError> {
        check_program(&bytes)?;
        Ok(Self { bytes })
    }

    /// The raw `struct sock_filter` array.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.bytes.len() / INSN_LEN
    }

    /// Always false for a checked program (it ends in a RET); present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A structural problem in a BPF program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// Length not a multiple of 8, zero, or over [`MAX_INSNS`] instructions.
    #[error("program of {0} bytes is not 1..=4096 instructions")]
    Length(usize),
    /// A jump leaves the program.
    #[error("instruction {0} jumps out of the program")]
    JumpOutOfRange(usize),
    /// A load that is not a 32-bit absolute load inside `struct seccomp_data`.
    #[error("instruction {0} loads outside struct seccomp_data")]
    BadLoad(usize),
    /// The last instruction is not a RET.
    #[error("the program does not end in RET")]
    NoFinalRet,
}

/// One decoded `struct sock_filter`.
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

fn decode(bytes: &[u8]) -> impl Iterator<Item = Insn> + '_ {
    bytes.chunks_exact(INSN_LEN).map(|c| Insn {
        code: u16::from_ne_bytes([c[0], c[1]]),
        jt: c[2],
        jf: c[3],
        k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
    })
}

/// Checks a raw seccomp program without the kernel: whole instructions, at most 4096, every
/// jump lands inside, every packet load is a 32-bit absolute load within `seccomp_data`, and it
/// ends in RET. Returns the instruction count.
pub fn check_program(bytes: &[u8]) -> Result<usize, ProgramError> {
    let n = bytes.len() / INSN_LEN;
    if !bytes.len().is_multiple_of(INSN_LEN) || n == 0 || n > MAX_INSNS {
        return Err(ProgramError::Length(bytes.len()));
    }
    for (pc, insn) in decode(bytes).enumerate() {
        let class = insn.code & 0x07;
        let lands = |off: usize| pc + 1 + off < n;
        match class {
            // BPF_LD: seccomp only offers BPF_W | BPF_ABS into seccomp_data (or BPF_IMM/LEN).
            0x00 => {
                let mode = insn.code & 0xe0;
                let abs_ok = insn.code == 0x20 && insn.k < SECCOMP_DATA_LEN && insn.k.is_multiple_of(4);
                if !(abs_ok || mode == 0x00 || mode == 0x80) {
                    return Err(ProgramError::BadLoad(pc));
                }
            }
            // BPF_JMP: BPF_JA uses k, conditionals use jt/jf.
            0x05 => {
                let ok = if insn.code & 0xf0 == 0x00 {
                    lands(insn.k as usize)
                } else {
                    lands(insn.jt as usize) && lands(insn.jf as usize)
                };
                if !ok {
                    return Err(ProgramError::JumpOutOfRange(pc));
                }
            }
            _ => {}
        }
    }
    match decode(bytes).last() {
        Some(last) if last.code & 0x07 == 0x06 => Ok(n),
        _ => Err(ProgramError::NoFinalRet),
    }
}

/// What the filter returns for the calls of [`FilterSpec::notify`]: which transport hands them
/// to the shared handlers. Every other rule (the escape-route denials) is the same either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TrapAction {
    /// `SECCOMP_RET_USER_NOTIF`, answered through the listener fd by
    /// [`Supervisor`](crate::seccomp::Supervisor).
    #[default]
    UserNotify,
    /// `SECCOMP_RET_TRACE`, answered at a `PTRACE_EVENT_SECCOMP` stop by
    /// [`Tracer`](crate::ptrace::Tracer). With no tracer attached the kernel fails the call with
    /// ENOSYS, so a tracee that somehow lost its tracer still cannot connect anywhere.
    Trace,
}

impl TrapAction {
    /// The `SECCOMP_RET_ACTION_FULL` bits a trapping RET carries.
    const fn ret_bits(self) -> u32 {
        match self {
            Self::UserNotify => 0x7fc0_0000,
            Self::Trace => 0x7ff0_0000,
        }
    }

    fn scmp(self) -> ScmpAction {
        match self {
            Self::UserNotify => ScmpAction::Notify,
            // The data half is unused: the tracer dispatches on the syscall number alone.
            Self::Trace => ScmpAction::Trace(0),
        }
    }
}

/// True when some RET in `program` returns `SECCOMP_RET_USER_NOTIF`.
pub fn program_notifies(program: &BpfProgram) -> bool {
    program_traps(program, TrapAction::UserNotify)
}

/// True when some RET in `program` traps with `action`.
pub fn program_traps(program: &BpfProgram, action: TrapAction) -> bool {
    decode(program.as_bytes()).any(|i| i.code & 0x07 == 0x06 && i.k & 0xffff_0000 == action.ret_bits())
}

fn seccomp_err(context: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> FilterError {
    let context = context.into();
    move |source| FilterError::Seccomp { context, source }
}

fn syscall(name: &str) -> Result<ScmpSyscall, FilterError> {
    ScmpSyscall::from_name(name).map_err(|_| FilterError::UnknownSyscall(name.to_owned()))
}

/// Adds one rule; `conds` are ANDed.
fn rule(ctx: &mut ScmpFilterContext, act: ScmpAction, name: &str, conds: &[Cmp]) -> Result<(), FilterError> {
    let sys = syscall(name)?;
    let r = if conds.is_empty() { ctx.add_rule(act, sys) } else { ctx.add_rule_conditional(act, sys, conds) };
    r.map(|_| ()).map_err(seccomp_err(format!("rule for {name}")))
}

/// Builds the filter for `spec` (after [`FilterSpec::check`]) for the native architecture only
/// and exports it as a checked raw BPF program whose trapped calls go to a user-notify listener:
/// [`compile_with`] and [`TrapAction::UserNotify`].
pub fn compile(spec: &FilterSpec) -> Result<BpfProgram, FilterError> {
    compile_with(spec, TrapAction::UserNotify)
}

/// Like [`compile`], with the calls of [`FilterSpec::notify`] trapped by `trap`.
pub fn compile_with(spec: &FilterSpec, trap: TrapAction) -> Result<BpfProgram, FilterError> {
    export(&build(spec, trap)?)
}

fn build(spec: &FilterSpec, trap: TrapAction) -> Result<ScmpFilterContext, FilterError> {
    spec.check()?;
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).map_err(seccomp_err("init"))?;
    let badarch = match spec.foreign_arch {
        ForeignArch::KillProcess => ScmpAction::KillProcess,
        ForeignArch::Errno(e) => ScmpAction::Errno(e),
    };
    ctx.set_act_badarch(badarch).map_err(seccomp_err("bad-arch action"))?;
    // The installer sets no_new_privs itself; the exported program does not carry it anyway.
    ctx.set_ctl_nnp(false).map_err(seccomp_err("nnp"))?;

    let n = spec.notify;
    let notify = trap.scmp();
    if n.connect {
        rule(&mut ctx, notify, "connect", &[])?;
    }
    if n.sendto {
        rule(&mut ctx, notify, "sendto", &[Cmp::new(4, Op::NotEqual, 0)])?;
    }
    if n.sendmsg {
        rule(&mut ctx, notify, "sendmsg", &[])?;
        rule(&mut ctx, notify, "sendmmsg", &[])?;
    }
    if n.getpeername {
        rule(&mut ctx, notify, "getpeername", &[])?;
    }
    for d in &spec.deny {
        rule(&mut ctx, ScmpAction::Errno(d.errno), &d.name, &[])?;
    }
    let ns_errno = ScmpAction::Errno(spec.clone_flags_errno);
    for &flag in &spec.denied_clone_flags {
        // x86_64 clone(flags, ...) and unshare(flags) both take the flags in arg 0.
        let cond = [Cmp::new(0, Op::MaskedEqual(flag), flag)];
        rule(&mut ctx, ns_errno, "clone", &cond)?;
        rule(&mut ctx, ns_errno, "unshare", &cond)?;
    }
    if let Some(e) = spec.clone3_errno {
        rule(&mut ctx, ScmpAction::Errno(e), "clone3", &[])?;
    }
    add_socket_rules(&mut ctx, spec)?;
    Ok(ctx)
}

fn add_socket_rules(ctx: &mut ScmpFilterContext, spec: &FilterSpec) -> Result<(), FilterError> {
    let s = &spec.sockets;
    let fam = |f: i32| Cmp::new(0, Op::MaskedEqual(INT_MASK), f as u64);
    let fam_errno = ScmpAction::Errno(s.family_errno);
    for call in ["socket", "socketpair"] {
        for &f in &s.denied_families {
            rule(ctx, fam_errno, call, &[fam(f)])?;
        }
        if let Some(allowed) = &s.netlink_allowed {
            for p in (0..MAX_NETLINK_PROTOCOL).filter(|p| !allowed.contains(p)) {
                let proto = Cmp::new(2, Op::MaskedEqual(INT_MASK), p as u64);
                rule(ctx, fam_errno, call, &[fam(libc::AF_NETLINK), proto])?;
            }
        }
        if let Some(e) = s.raw_errno {
            for f in [libc::AF_INET, libc::AF_INET6] {
                for ty in [libc::SOCK_RAW, SOCK_PACKET] {
                    let ty = Cmp::new(1, Op::MaskedEqual(SOCK_TYPE_MASK), ty as u64);
                    rule(ctx, ScmpAction::Errno(e), call, &[fam(f), ty])?;
                }
            }
        }
    }
    Ok(())
}

/// Exports through a memfd: libseccomp 2.5 (Debian 12) only writes the program to an fd.
fn export(ctx: &ScmpFilterContext) -> Result<BpfProgram, FilterError> {
    let fd = rustix::fs::memfd_create("agentsh-seccomp-bpf", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(std::io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&file).map_err(seccomp_err("export"))?;
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(BpfProgram::from_bytes(bytes)?)
}

/// libseccomp's human-readable rendering of `spec` (for debugging and `agentsh detect`).
pub fn render_pfc(spec: &FilterSpec) -> Result<String, FilterError> {
    let ctx = build(spec, TrapAction::UserNotify)?;
    let fd = rustix::fs::memfd_create("agentsh-seccomp-pfc", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(std::io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    ctx.export_pfc(&file).map_err(seccomp_err("export pfc"))?;
    file.seek(SeekFrom::Start(0))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_compiles_to_a_checked_notifying_program() {
        let prog = compile(&FilterSpec::sandbox_default()).unwrap();
        assert!(prog.len() > 20 && prog.len() <= MAX_INSNS);
        assert!(program_notifies(&prog));
        assert_eq!(check_program(prog.as_bytes()), Ok(prog.len()));
    }

    #[test]
    fn trace_action_changes_only_the_trapped_returns() {
        let spec = FilterSpec::sandbox_default();
        let notify = compile(&spec).unwrap();
        let trace = compile_with(&spec, TrapAction::Trace).unwrap();
        assert!(program_traps(&trace, TrapAction::Trace) && !program_notifies(&trace));
        assert!(!program_traps(&notify, TrapAction::Trace));
        assert_eq!(notify.len(), trace.len());
        let rets = |p: &BpfProgram, bits: u32| {
            decode(p.as_bytes())
                .map(|i| (i.code, i.jt, i.jf, if i.k == bits { 0 } else { i.k }))
                .collect::<Vec<_>>()
        };
        // Same program, instruction by instruction, once the trapping RET is masked out.
        assert_eq!(
            rets(&notify, TrapAction::UserNotify.ret_bits()),
            rets(&trace, TrapAction::Trace.ret_bits())
        );
    }

    #[test]
    fn unknown_syscall_is_reported() {
        let mut spec = FilterSpec::sandbox_default();
        spec.deny.push(super::super::DeniedSyscall { name: "no_such_call".into(), errno: 1 });
        assert!(matches!(compile(&spec), Err(FilterError::UnknownSyscall(n)) if n == "no_such_call"));
    }

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Vec<u8> {
        let mut v = code.to_ne_bytes().to_vec();
        v.extend([jt, jf]);
        v.extend(k.to_ne_bytes());
        v
    }

    #[test]
    fn check_program_catches_malformed_programs() {
        let ret_allow = insn(0x06, 0, 0, 0x7fff_0000);
        assert_eq!(check_program(&ret_allow), Ok(1));
        assert_eq!(check_program(&ret_allow[..7]), Err(ProgramError::Length(7)));
        assert_eq!(check_program(&[]), Err(ProgramError::Length(0)));
        let load_arch = insn(0x20, 0, 0, 4);
        assert_eq!(check_program(&load_arch), Err(ProgramError::NoFinalRet));
        let bad_load = [insn(0x20, 0, 0, 64), ret_allow.clone()].concat();
        assert_eq!(check_program(&bad_load), Err(ProgramError::BadLoad(0)));
        let far_jump = [insn(0x15, 0, 5, 1), ret_allow.clone()].concat();
        assert_eq!(check_program(&far_jump), Err(ProgramError::JumpOutOfRange(0)));
        let ok_jump = [load_arch, insn(0x15, 0, 1, 1), ret_allow.clone(), ret_allow].concat();
        assert_eq!(check_program(&ok_jump), Ok(4));
        let too_long = vec![0u8; INSN_LEN * (MAX_INSNS + 1)];
        assert!(matches!(check_program(&too_long), Err(ProgramError::Length(_))));
    }
}
