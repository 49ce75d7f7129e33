//! The sandbox's seccomp filter: a pure [`FilterSpec`], compiled by libseccomp into a raw,
//! checked classic-BPF program that a forked child installs without allocating.

mod compile;
mod install;
mod spec;

pub use compile::{
    BpfProgram, FilterError, INSN_LEN, MAX_INSNS, ProgramError, TrapAction, check_program, compile,
    compile_with, program_notifies, program_traps, render_pfc,
};
pub use install::{install, install_with_listener};
pub use spec::{DEFAULT_DENIED, DeniedSyscall, FilterSpec, ForeignArch, NotifySet, SocketRules, SpecError};
