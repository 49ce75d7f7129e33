//! [`EbpfBackend`]: the embedded programs loaded once, their maps shared by every session, and
//! attaching one session cgroup.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use aya::maps::{HashMap as BpfHashMap, LpmTrie, MapData};
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr, CgroupSockopt, SockOps,
};
use aya::{Ebpf, EbpfLoader};

use super::attached::{Attached, AttachedLink};
use super::maps::{DenyData, DenyValue, LocalKey, OrigValue, SessionValue};
use super::refusals::Refusals;
use super::{EbpfError, Program, SessionParams};

/// The object `build.rs` compiled from `bpf/redirect.bpf.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/redirect.bpf.o"));

/// `CGROUP2_SUPER_MAGIC`: programs attach to cgroup v2 directories only.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Maps and programs shared by every session of one backend.
pub(crate) struct Shared {
    pub(crate) ebpf: Mutex<Ebpf>,
    pub(crate) sessions: Mutex<BpfHashMap<MapData, u64, SessionValue>>,
    pub(crate) denies: Mutex<LpmTrie<MapData, DenyData, DenyValue>>,
    /// The refusal stream, until [`EbpfBackend::refusals`] hands it out.
    refusals: Mutex<Option<Refusals>>,
    pub(crate) by_local: Mutex<BpfHashMap<MapData, LocalKey, OrigValue>>,
    /// Cgroups with a live session (one session per cgroup).
    pub(crate) attached: Mutex<HashSet<u64>>,
}

/// Locks `m`; every holder finishes its update before it can panic, so a poisoned lock is still
/// consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The eBPF redirect backend: programs loaded into the kernel, ready to attach to session cgroups.
pub struct EbpfBackend {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EbpfBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfBackend").finish_non_exhaustive()
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map =
        ebpf.take_map(name).ok_or(EbpfError::Map { map: name, reason: "missing from the object".into() })?;
    T::try_from(map).map_err(|e| EbpfError::Map { map: name, reason: e.to_string() })
}

fn program_error(p: Program, e: aya::programs::ProgramError) -> EbpfError {
    EbpfError::Program { program: p.name(), source: Box::new(e) }
}

impl EbpfBackend {
    /// Loads the embedded programs and maps into the kernel (needs CAP_BPF and CAP_NET_ADMIN, in
    /// practice root). Nothing is attached yet.
    pub fn load() -> Result<Self, EbpfError> {
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(|e| EbpfError::Load(Box::new(e)))?;
        for p in Program::ALL {
            let prog = ebpf
                .program_mut(p.name())
                .ok_or_else(|| program_error(p, aya::programs::ProgramError::UnexpectedProgramType))?;
            let loaded = match p {
                Program::SockOps => <&mut SockOps>::try_from(prog).and_then(|s| s.load()),
                Program::Egress => <&mut CgroupSkb>::try_from(prog).and_then(|s| s.load()),
                Program::SockCreate => <&mut CgroupSock>::try_from(prog).and_then(|s| s.load()),
                Program::Setsockopt => <&mut CgroupSockopt>::try_from(prog).and_then(|s| s.load()),
                _ => <&mut CgroupSockAddr>::try_from(prog).and_then(|s| s.load()),
            };
            loaded.map_err(|e| program_error(p, e))?;
        }
        let sessions = take_map(&mut ebpf, "sessions")?;
        let denies = take_map(&mut ebpf, "denies")?;
        let by_local = take_map(&mut ebpf, "by_local")?;
        let refusals = Refusals::new(take_map(&mut ebpf, "refusals")?, take_map(&mut ebpf, "refusals_lost")?);
        Ok(Self {
            shared: Arc::new(Shared {
                ebpf: Mutex::new(ebpf),
                sessions: Mutex::new(sessions),
                denies: Mutex::new(denies),
                by_local: Mutex::new(by_local),
                refusals: Mutex::new(Some(refusals)),
                attached: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The stream of connects and sends the programs refused, for every session of this backend
    /// (each names its cgroup). Handed out once; `None` afterwards.
    pub fn refusals(&self) -> Option<Refusals> {
        lock(&self.shared.refusals).take()
    }

    /// Attaches the session `params` to the cgroup v2 directory `cgroup_dir` (processes in it and
    /// below it are redirected), then proves it works with a probe from inside the cgroup (see
    /// [`super::SENTINEL_V4`]). Any failure leaves nothing attached and is an error: the caller
    /// must not start the session. Dropping the returned [`Attached`] detaches.
    pub fn attach(&self, cgroup_dir: &Path, params: SessionParams) -> Result<Attached, EbpfError> {
        self.attach_omitting(cgroup_dir, params, &[])
    }

    /// [`Self::attach`] with some programs deliberately left out, to show that the self-test
    /// catches a silently inactive program. Not for production use.
    #[doc(hidden)]
    pub fn attach_omitting(
        &self,
        cgroup_dir: &Path,
        params: SessionParams,
        omit: &[Program],
    ) -> Result<Attached, EbpfError> {
        let (dir, cgroup_id) = open_cgroup(cgroup_dir)?;
        if !lock(&self.shared.attached).insert(cgroup_id) {
            return Err(EbpfError::AlreadyAttached { cgroup_id });
        }
        // From here on, dropping `att` undoes whatever was done.
        let mut att = Attached::new(self.shared.clone(), cgroup_dir.to_owned(), cgroup_id, &params);
        att.install_session(&params.deny_list)?;
        for p in Program::ALL.into_iter().filter(|p| !omit.contains(p)) {
            let link = self.attach_one(p, &dir).map_err(|e| program_error(p, e))?;
            att.links.push(link);
        }
        super::selftest::run(&att)?;
        Ok(att)
    }

    fn attach_one(&self, p: Program, cgroup: &File) -> Result<AttachedLink, aya::programs::ProgramError> {
        let mut ebpf = lock(&self.shared.ebpf);
        let prog = ebpf.program_mut(p.name()).ok_or(aya::programs::ProgramError::UnexpectedProgramType)?;
        // aya attaches with a bpf_link (the kernel needs 5.7+ for these programs' helpers anyway),
        // which always coexists with other programs on the cgroup and its ancestors and must be
        // created without attach flags: `Single` is the mode that passes none.
        match p {
            Program::SockOps => {
                let prog: &mut SockOps = prog.try_into()?;
                let id = prog.attach(cgroup, CgroupAttachMode::Single)?;
                Ok(AttachedLink::SockOps(prog.take_link(id)?))
            }
            Program::Egress => {
                let prog: &mut CgroupSkb = prog.try_into()?;
                let id = prog.attach(cgroup, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)?;
                Ok(AttachedLink::Skb(prog.take_link(id)?))
            }
            Program::SockCreate => {
                let prog: &mut CgroupSock = prog.try_into()?;
                let id = prog.attach(cgroup, CgroupAttachMode::Single)?;
                Ok(AttachedLink::Sock(prog.take_link(id)?))
            }
            Program::Setsockopt => {
                let prog: &mut CgroupSockopt = prog.try_into()?;
                let id = prog.attach(cgroup, CgroupAttachMode::Single)?;
                Ok(AttachedLink::Sockopt(prog.take_link(id)?))
            }
            _ => {
                let prog: &mut CgroupSockAddr = prog.try_into()?;
                let id = prog.attach(cgroup, CgroupAttachMode::Single)?;
                Ok(AttachedLink::SockAddr(prog.take_link(id)?))
            }
        }
    }
}

/// Opens a cgroup v2 directory and returns it with its cgroup id (the directory's inode number on
/// cgroup2fs, which is what `bpf_get_current_cgroup_id` returns).
fn open_cgroup(path: &Path) -> Result<(File, u64), EbpfError> {
    let err = |reason: String| EbpfError::Cgroup { path: path.display().to_string(), reason };
    let dir = File::open(path).map_err(|e| err(e.to_string()))?;
    let st = rustix::fs::fstatfs(&dir).map_err(|e| err(e.to_string()))?;
    if st.f_type as i64 != CGROUP2_SUPER_MAGIC {
        return Err(err("not a cgroup v2 directory (programs attach to the unified hierarchy)".into()));
    }
    let id = dir.metadata().map_err(|e| err(e.to_string()))?.ino();
    Ok((dir, id))
}
