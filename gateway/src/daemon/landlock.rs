//! `files.landlock` resolved once at start-up against the kernel, and the plan each command
//! runs under: the session's `file_rules` (with `${HOME}` from the caller's environment) over
//! the system trees, the workspace, the private `/tmp`, the caller's home and `read_paths`.

use std::path::Path;

use anyhow::bail;
use policies::{
    config::{FilesConfig, LandlockMode},
    engine::file::FileRules,
};
use sandbox::landlock_plan::LandlockPlan;

/// Whether commands run under Landlock, for the daemon's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LandlockState {
    /// Every command runs under a ruleset at this ABI.
    On {
        /// The kernel's Landlock ABI.
        abi: u32,
    },
    /// Commands run without Landlock, for this reason (`session show` names it).
    Off {
        /// Why: the config turned it off, or the kernel has none.
        reason: String,
    },
}

impl LandlockState {
    /// The ABI commands run under, when the layer is on.
    pub fn abi(&self) -> Option<u32> {
        match self {
            LandlockState::On { abi } => Some(*abi),
            LandlockState::Off { .. } => None,
        }
    }

    /// Why the layer is off, when it is.
    pub fn off_reason(&self) -> Option<&str> {
        match self {
            LandlockState::On { .. } => None,
            LandlockState::Off { reason } => Some(reason),
        }
    }
}

/// The state `mode` gives on a kernel whose Landlock ABI is `abi` (`None`: no Landlock).
/// `required`, and `auto` under `security.strict`, refuse to run without it (fail closed);
/// plain `auto` runs without it and says so on stderr.
pub fn resolve(mode: LandlockMode, strict: bool, abi: Option<u32>) -> anyhow::Result<LandlockState> {
    const ACTION: &str = "enable CONFIG_SECURITY_LANDLOCK and add landlock to the lsm= boot parameter";
    match (mode, abi) {
        (LandlockMode::Off, _) => {
            Ok(LandlockState::Off { reason: "files.landlock is off: file_rules are not enforced".into() })
        }
        (_, Some(abi)) => Ok(LandlockState::On { abi }),
        (LandlockMode::Required, None) => {
            bail!("files.landlock: required, but this kernel offers no Landlock ({ACTION})")
        }
        (LandlockMode::Auto, None) if strict => bail!(
            "files.landlock: auto finds no Landlock on this kernel, and security.strict refuses to run \
             without it ({ACTION})"
        ),
        (LandlockMode::Auto, None) => {
            let reason = "the kernel offers no Landlock: file_rules are not enforced".to_string();
            tracing::warn!("{reason}");
            eprintln!("agentsh server: warning: {reason} ({ACTION}; files.landlock: auto)");
            Ok(LandlockState::Off { reason })
        }
    }
}

/// The plan for one command of a session over `workspace` whose rules are `rules`, for a
/// caller whose home is `home`. Trees the rules deny in part that could not be split are
/// logged: they are left out whole.
pub fn plan(files: &FilesConfig, workspace: &Path, home: Option<&Path>, rules: &FileRules) -> LandlockPlan {
    let plan = LandlockPlan::for_session(workspace, home, &files.read_paths).narrowed(rules);
    for p in &plan.left_out {
        tracing::warn!(path = %p.display(), "file_rules deny part of this tree and it could not be split: left out");
    }
    // The workspace's are the FUSE layer's (see the session's `fuse_workspace`).
    for p in plan.granted_whole.iter().filter(|p| *p != workspace) {
        tracing::warn!(
            path = %p.display(),
            "file_rules deny part of this tree, which Landlock grants whole: not applied inside it"
        );
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_resolves_against_the_kernel() {
        let on = LandlockState::On { abi: 6 };
        assert_eq!(resolve(LandlockMode::Auto, false, Some(6)).unwrap(), on);
        assert_eq!(resolve(LandlockMode::Required, true, Some(6)).unwrap(), on);
        let off = resolve(LandlockMode::Off, true, Some(6)).unwrap();
        assert!(off.off_reason().is_some_and(|r| r.contains("files.landlock is off")), "{off:?}");
        let none = resolve(LandlockMode::Auto, false, None).unwrap();
        assert!(none.off_reason().is_some_and(|r| r.contains("no Landlock")), "{none:?}");
        let e = resolve(LandlockMode::Required, false, None).unwrap_err().to_string();
        assert!(e.starts_with("files.landlock: required"), "{e}");
        let e = resolve(LandlockMode::Auto, true, None).unwrap_err().to_string();
        assert!(e.contains("security.strict"), "{e}");
    }
}
