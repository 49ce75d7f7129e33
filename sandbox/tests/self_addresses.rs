//! The sandbox's self addresses on `lo` (SANDBOX_SELF_V4 / SANDBOX_SELF_V6): present, still
//! only `lo` as a device, enough for `getaddrinfo` with `AI_ADDRCONFIG`, and usable for a
//! server and its clients inside the sandbox. Each test runs in a fresh sandbox.
mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{StateDir, privileged, run, sh};
use sandbox::{LaunchSpec, SANDBOX_SELF_V4, SANDBOX_SELF_V6};

/// The interface ioctls and getaddrinfo calls are made from Python: the sandbox has no `ip`
/// and this keeps the checks on what the kernel and glibc themselves report.
fn python(script: &str, state: &StateDir) -> LaunchSpec {
    let mut spec = sh(&format!("exec python3 -c '{script}'"), state);
    // The host's /etc/hosts may lack `::1 localhost`; the tests should not depend on it.
    let hosts = state.0.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n::1 localhost\n").unwrap();
    spec.bind_files.push((hosts, "/etc/hosts".into()));
    spec
}

/// `/proc/net/if_inet6`'s spelling of an address: 32 hex digits, no colons.
fn if_inet6_hex(a: Ipv6Addr) -> String {
    a.octets().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn addresses_are_documented_non_routed_ranges() {
    let v4: IpAddr = SANDBOX_SELF_V4.into();
    assert!(SANDBOX_SELF_V4.is_link_local(), "{v4}");
    assert_eq!(SANDBOX_SELF_V4, Ipv4Addr::new(169, 254, 255, 254));
    assert!(SANDBOX_SELF_V6.is_unique_local(), "{SANDBOX_SELF_V6}");
    assert_eq!(SANDBOX_SELF_V6, "fd00:0:5e55:ffff::fffe".parse::<Ipv6Addr>().unwrap());
    assert!(LaunchSpec::new(["true"], "/nonexistent").self_addresses, "on by default");
}

#[test]
fn self_addresses_are_on_lo_and_lo_is_the_only_device() {
    if !privileged("self_addresses_are_on_lo_and_lo_is_the_only_device") {
        return;
    }
    let state = StateDir::new();
    // SIOCGIFADDR / SIOCGIFNETMASK on the alias, then the IPv6 table and the device list.
    let script = "import socket, fcntl, struct, os\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        req = struct.pack(\"16s16x\", b\"lo:agentsh\")\n\
        for op in (0x8915, 0x891b):\n\
        \x20   print(\"v4\", socket.inet_ntoa(fcntl.ioctl(s.fileno(), op, req)[20:24]))\n\
        print(open(\"/proc/net/if_inet6\").read(), end=\"\")\n\
        print(\"devices\", sorted(os.listdir(\"/sys/class/net\")))\n";
    let out = run(python(script, &state));
    assert_eq!(out.code, 0, "{out:?}");
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some(format!("v4 {SANDBOX_SELF_V4}").as_str()), "address: {out:?}");
    assert_eq!(lines.next(), Some("v4 255.255.255.255"), "netmask /32: {out:?}");
    // if_inet6: address, ifindex, prefix length, scope, flags, device name.
    let v6 = if_inet6_hex(SANDBOX_SELF_V6);
    let row: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&v6.as_str()))
        .unwrap_or_else(|| panic!("{SANDBOX_SELF_V6} not in /proc/net/if_inet6: {out:?}"))
        .clone();
    assert_eq!(row[2], "80", "prefix length 128: {row:?}");
    assert_eq!(row[5], "lo", "{row:?}");
    let flags = u32::from_str_radix(row[4], 16).unwrap();
    assert_eq!(flags & 0x40, 0, "tentative (DAD pending): {row:?}");
    assert!(out.stdout.contains("\ndevices ['lo']\n"), "only lo: {out:?}");
}

/// `getaddrinfo(host, 80, family, SOCK_STREAM, 0, AI_ADDRCONFIG)`'s first address, or the
/// `gaierror` text.
fn addrconfig_script(host: &str, family: &str) -> String {
    format!(
        "import socket\n\
         try:\n\
         \x20   r = socket.getaddrinfo(\"{host}\", 80, socket.{family}, socket.SOCK_STREAM, 0, socket.AI_ADDRCONFIG)\n\
         \x20   print(\"ok\", r[0][4][0])\n\
         except socket.gaierror as e:\n\
         \x20   print(\"gaierror\", e.errno)\n"
    )
}

#[test]
fn getaddrinfo_with_addrconfig_resolves_localhost_in_both_families() {
    if !privileged("getaddrinfo_with_addrconfig_resolves_localhost_in_both_families") {
        return;
    }
    for (family, want) in [("AF_INET", "127.0.0.1"), ("AF_INET6", "::1")] {
        let state = StateDir::new();
        let out = run(python(&addrconfig_script("localhost", family), &state));
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.stdout.trim(), format!("ok {want}"), "{family}: {out:?}");
    }
    // And the glibc tool the brief names, through the same path.
    let state = StateDir::new();
    let mut spec = python("", &state);
    spec.argv = vec!["getent".into(), "ahostsv4".into(), "localhost".into()];
    let out = run(spec);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("127.0.0.1 "), "{out:?}");
}

#[test]
fn without_self_addresses_addrconfig_finds_nothing() {
    if !privileged("without_self_addresses_addrconfig_finds_nothing") {
        return;
    }
    // The control for the test above: what the self addresses are for. glibc checks
    // AI_ADDRCONFIG before any lookup and ignores 127.0.0.0/8 and ::1, so with only those it
    // answers EAI_NONAME (-2) for every name.
    for family in ["AF_INET", "AF_INET6"] {
        let state = StateDir::new();
        let mut spec = python(&addrconfig_script("localhost", family), &state);
        spec.self_addresses = false;
        let out = run(spec);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.stdout.trim(), "gaierror -2", "{family}: {out:?}");
    }
}

#[test]
fn server_on_the_self_addresses_accepts_connections_from_inside() {
    if !privileged("server_on_the_self_addresses_accepts_connections_from_inside") {
        return;
    }
    for (family, addr) in
        [("AF_INET", SANDBOX_SELF_V4.to_string()), ("AF_INET6", SANDBOX_SELF_V6.to_string())]
    {
        let state = StateDir::new();
        let script = format!(
            "import socket\n\
             srv = socket.socket(socket.{family}, socket.SOCK_STREAM)\n\
             srv.bind((\"{addr}\", 0))\n\
             srv.listen(1)\n\
             c = socket.create_connection(srv.getsockname()[:2], timeout=10)\n\
             conn, peer = srv.accept()\n\
             c.sendall(b\"ping\")\n\
             print(conn.recv(4).decode(), peer[0], c.getsockname()[0])\n"
        );
        let out = run(python(&script, &state));
        assert_eq!(out.code, 0, "{out:?}");
        // The client's source is the self address too: the route to it is the local one on lo.
        assert_eq!(out.stdout.trim(), format!("ping {addr} {addr}"), "{family}: {out:?}");
    }
}
