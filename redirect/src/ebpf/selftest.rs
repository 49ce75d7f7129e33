//! The attach self-test: a probe process inside the session cgroup connects to a TEST-NET
//! sentinel, which must be rewritten to the gateway listener and filed with the right original
//! destination and pid; to a loopback listener of its own, which must be reached directly (no
//! record), and to one that shares its port (`SO_REUSEPORT`), which must be redirected like any
//! other destination; to the canary deny rule, which must be refused with EPERM; and sends a raw
//! datagram to the sentinel, which the egress filter must drop. A program that is silently
//! inactive (not attached, wrong cgroup, map layout drift) fails the attach.
//!
//! The probe's sockets are bound to `lo`, so even when nothing rewrites or drops them no packet
//! leaves the machine. The sentinel connection reaches the gateway's accept queue with its record already
//! taken by the self-test, so the gateway sees an unnamed connection and closes it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use super::EbpfError;
use super::attached::Attached;
use super::probe::{ProbeData, ProbeOp, ProbeReport, run_in_cgroup};
use crate::sockaddr::canonical;

/// The self-test's IPv4 destination (TEST-NET-1, discard port): rewritten, never sent.
pub const SENTINEL_V4: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 9);
/// The self-test's IPv6 destination (documentation prefix, discard port), used when the session
/// has an IPv6 gateway.
pub const SENTINEL_V6: SocketAddrV6 =
    SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9), 9, 0, 0);
/// Always in every session's deny set, so the self-test can see refusals work.
pub const CANARY_DENY_V4: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 254), 9);

/// The canary's index in the deny trie, so its refusals are told apart from the session's rules.
pub(crate) const CANARY_INDEX: u32 = u32::MAX;

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

fn fail(msg: String) -> EbpfError {
    EbpfError::SelfTest(msg)
}

/// Runs `op` in the session cgroup and returns its report and the probe socket's local address;
/// a failed connect fails the self-test with `expected`, what should have happened.
fn connected(att: &Attached, op: ProbeOp, expected: &str) -> Result<(ProbeReport, SocketAddr), EbpfError> {
    let r = run_in_cgroup(att.cgroup_dir(), op, PROBE_TIMEOUT).map_err(EbpfError::Probe)?;
    if let Some(errno) = r.errno {
        return Err(fail(format!(
            "probe failed at {} ({}): {expected}",
            r.stage,
            std::io::Error::from_raw_os_error(errno)
        )));
    }
    let local = r.local.ok_or_else(|| fail("probe socket has no local address".into()))?;
    Ok((r, local))
}

/// One sentinel connect: must land on `gateway` with its record filed under the probe's address.
fn check_redirect(att: &Attached, sentinel: SocketAddr, gateway: SocketAddr) -> Result<(), EbpfError> {
    let op = ProbeOp::TcpConnect {
        dst: sentinel,
        loopback_only: true,
        payload: ProbeData::default(),
        want_reply: false,
    };
    let (r, local) = connected(
        att,
        op,
        &format!("a connect to {sentinel} was not redirected to a listening gateway at {gateway}"),
    )?;
    let rec =
        att.take(local).ok_or_else(|| fail(format!("no record for the probe connection from {local}")))?;
    let o = rec.original;
    if o.dst != canonical(sentinel) || o.gateway != gateway || rec.tgid != r.pid {
        return Err(fail(format!(
            "probe record says {} via {} from pid {}, expected {sentinel} via {gateway} from pid {}",
            o.dst, o.gateway, rec.tgid, r.pid
        )));
    }
    if r.peer != Some(sentinel) {
        return Err(fail(format!("getpeername on the probe said {:?}, expected {sentinel}", r.peer)));
    }
    Ok(())
}

/// A loopback listener the probe opened itself: its own connect to it must stay direct (the
/// listener accepts it, nothing is recorded), and once the listener shares its port the connect
/// must be funnelled (the kernel could hand it to another member of the group).
fn check_own_listener(att: &Attached) -> Result<(), EbpfError> {
    let bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let op = ProbeOp::ListenConnect { bind, reuseport: false, accept: true };
    let (r, local) =
        connected(att, op, "a connect to the session's own loopback listener was not left direct")?;
    if att.redirected(local).is_some() || r.accepted != Some(local) {
        return Err(fail(format!(
            "probe connect from {local} to its own loopback listener {:?} was recorded or not accepted there \
             (accepted {:?})",
            r.peer, r.accepted
        )));
    }
    let op = ProbeOp::ListenConnect { bind, reuseport: true, accept: false };
    let shared = "a connect to a loopback listener sharing its port (SO_REUSEPORT) was not redirected";
    let (r, local) = connected(att, op, &format!("{shared} to a listening gateway at {}", att.gateway_v4))?;
    let listener = r.peer.map(canonical);
    match att.take(local) {
        Some(rec) if Some(rec.original.dst) == listener && rec.tgid == r.pid => Ok(()),
        Some(rec) => Err(fail(format!(
            "probe record says {} from pid {}, expected {listener:?} from pid {}",
            rec.original.dst, rec.tgid, r.pid
        ))),
        None => Err(fail(format!("{shared} ({listener:?})"))),
    }
}

/// Runs the self-test for a freshly attached session.
pub(super) fn run(att: &Attached) -> Result<(), EbpfError> {
    check_redirect(att, SocketAddr::V4(SENTINEL_V4), att.gateway_v4)?;
    if let Some(gw6) = att.gateway_v6 {
        check_redirect(att, SocketAddr::V6(SENTINEL_V6), gw6)?;
    }
    check_own_listener(att)?;
    let op = ProbeOp::TcpConnect {
        dst: SocketAddr::V4(CANARY_DENY_V4),
        loopback_only: true,
        payload: ProbeData::default(),
        want_reply: false,
    };
    let r = run_in_cgroup(att.cgroup_dir(), op, PROBE_TIMEOUT).map_err(EbpfError::Probe)?;
    if r.errno != Some(libc::EPERM) || r.stage != "connect" {
        return Err(fail(format!(
            "connect to the canary deny rule {CANARY_DENY_V4} was not refused with EPERM ({} at {})",
            r.errno.map_or("success".into(), |e| std::io::Error::from_raw_os_error(e).to_string()),
            r.stage
        )));
    }
    // No address hook sees a raw datagram: only the packet filter keeps it from leaving.
    let r =
        run_in_cgroup(att.cgroup_dir(), ProbeOp::RawSend { dst: SocketAddr::V4(SENTINEL_V4) }, PROBE_TIMEOUT)
            .map_err(EbpfError::Probe)?;
    if r.errno != Some(libc::EPERM) || r.stage != "send" {
        return Err(fail(format!(
            "a raw datagram to {} was not dropped by the egress filter ({} at {})",
            SENTINEL_V4.ip(),
            r.errno.map_or("sent".into(), |e| std::io::Error::from_raw_os_error(e).to_string()),
            r.stage
        )));
    }
    tracing::debug!(cgroup.id = att.cgroup_id(), "eBPF redirect self-test passed");
    Ok(())
}
