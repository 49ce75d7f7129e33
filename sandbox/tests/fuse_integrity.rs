//! Data integrity through the FUSE workspace: random writes, appends, truncations, renames,
//! deletes, fsyncs and shared-mmap writes done through the mount and on a shadow directory of
//! the real filesystem must leave identical trees (seen through the mount and in the backing
//! directory); a large file and concurrent writers to one file come back byte for byte.
#![allow(unsafe_code)]

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::fuse::Mounted;
use common::privileged;
use sandbox::workspace::SymlinkEscape;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const NAMES: [&str; 8] = ["f0", "f1", "d0/f2", "d0/f3", "d1/f4", "d1/f5", "d0/f6", "f7"];

/// One operation, applied identically under `root`.
#[derive(Debug, Clone)]
enum Op {
    Write { name: usize, offset: u64, data: Vec<u8> },
    Append { name: usize, data: Vec<u8> },
    Truncate { name: usize, len: u64 },
    Rename { from: usize, to: usize },
    Delete { name: usize },
    Fsync { name: usize },
    Mmap { name: usize, offset: u64, data: Vec<u8> },
}

fn random_op(rng: &mut Rng) -> Op {
    let name = rng.below(NAMES.len() as u64) as usize;
    match rng.below(20) {
        0..=6 => {
            let cap = if rng.below(4) == 0 { 300_000 } else { 9000 };
            let len = 1 + rng.below(cap) as usize;
            Op::Write { name, offset: rng.below(400_000), data: rng.bytes(len) }
        }
        7..=9 => {
            let len = 1 + rng.below(5000) as usize;
            Op::Append { name, data: rng.bytes(len) }
        }
        10..=11 => Op::Truncate { name, len: rng.below(350_000) },
        12..=13 => Op::Rename { from: name, to: rng.below(NAMES.len() as u64) as usize },
        14 => Op::Delete { name },
        15..=16 => Op::Fsync { name },
        _ => {
            let len = 1 + rng.below(10_000) as usize;
            Op::Mmap { name, offset: rng.below(200_000), data: rng.bytes(len) }
        }
    }
}

/// Applies `op` under `root`; returns a short outcome so both sides can be compared too.
fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let p = |i: usize| root.join(NAMES[i]);
    let os = |e: std::io::Error| e.raw_os_error().unwrap_or(-1);
    match op {
        Op::Write { name, offset, data } => {
            let f = OpenOptions::new().write(true).create(true).truncate(false).open(p(*name)).map_err(os)?;
            f.write_all_at(data, *offset).map_err(os)
        }
        Op::Append { name, data } => {
            let mut f = OpenOptions::new().append(true).create(true).open(p(*name)).map_err(os)?;
            f.write_all(data).map_err(os)
        }
        Op::Truncate { name, len } => {
            let f = OpenOptions::new().write(true).open(p(*name)).map_err(os)?;
            f.set_len(*len).map_err(os)
        }
        Op::Rename { from, to } => fs::rename(p(*from), p(*to)).map_err(os),
        Op::Delete { name } => fs::remove_file(p(*name)).map_err(os),
        Op::Fsync { name } => {
            let f = OpenOptions::new().write(true).open(p(*name)).map_err(os)?;
            f.sync_all().map_err(os)
        }
        Op::Mmap { name, offset, data } => {
            let f = OpenOptions::new().read(true).write(true).open(p(*name)).map_err(os)?;
            let len = f.metadata().map_err(os)?.len();
            // Only inside the file: a shared mapping cannot grow it.
            let (start, end) = (*offset, offset + data.len() as u64);
            if end > len {
                return Err(libc::ERANGE);
            }
            // SAFETY: a fresh shared mapping of `end` bytes of a file at least that long; it
            // is written only inside its bounds and unmapped before return.
            unsafe {
                let addr = libc::mmap(
                    std::ptr::null_mut(),
                    end as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                );
                if addr == libc::MAP_FAILED {
                    return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1));
                }
                let dst = (addr as *mut u8).add(start as usize);
                std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
                let synced = libc::msync(addr, end as usize, libc::MS_SYNC);
                libc::munmap(addr, end as usize);
                if synced < 0 {
                    return Err(libc::EIO);
                }
            }
            Ok(())
        }
    }
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for name in NAMES {
        if let Ok(mut f) = fs::File::open(root.join(name)) {
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            out.insert(PathBuf::from(name), data);
        }
    }
    out
}

fn assert_same(a: &BTreeMap<PathBuf, Vec<u8>>, b: &BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{what}: file sets differ");
    for (name, data) in a {
        let other = &b[name];
        assert_eq!(data.len(), other.len(), "{what}: {} sizes differ", name.display());
        if let Some(i) = data.iter().zip(other.iter()).position(|(x, y)| x != y) {
            panic!("{what}: {} differs first at byte {i}", name.display());
        }
    }
}

/// Kernel passthrough must be granted when the kernel has it (6.9+ with
/// `CONFIG_FUSE_PASSTHROUGH`), so these tests cannot pass by quietly serving data themselves.
fn kernel_has_passthrough() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 9)
}

#[test]
fn random_operations_match_a_shadow_copy() {
    if !privileged("random_operations_match_a_shadow_copy") {
        return;
    }
    random_operations(false);
}

#[test]
fn random_operations_match_a_shadow_copy_with_passthrough() {
    if !privileged("random_operations_match_a_shadow_copy_with_passthrough") {
        return;
    }
    random_operations(true);
}

fn random_operations(passthrough: bool) {
    let m = Mounted::with_passthrough("{}", SymlinkEscape::Deny, passthrough, |b| {
        fs::create_dir_all(b.join("d0")).unwrap();
        fs::create_dir_all(b.join("d1")).unwrap();
    });
    if passthrough && kernel_has_passthrough() {
        assert!(m.mount().passthrough_active(), "the kernel should have granted FUSE passthrough");
    }
    let shadow = m.root.join("shadow");
    fs::create_dir_all(shadow.join("d0")).unwrap();
    fs::create_dir_all(shadow.join("d1")).unwrap();
    for seed in [0x9e37_79b9_7f4a_7c15u64, 42, 7] {
        let mut rng = Rng(seed);
        for step in 0..700 {
            let op = random_op(&mut rng);
            let (through, direct) = (apply(&m.mnt, &op), apply(&shadow, &op));
            assert_eq!(through, direct, "seed {seed} step {step}: {op:?} ended differently");
            if step % 100 == 99 {
                assert_same(&snapshot(&shadow), &snapshot(&m.mnt), &format!("seed {seed} step {step}"));
            }
        }
    }
    let want = snapshot(&shadow);
    assert_same(&want, &snapshot(&m.mnt), "through the mount");
    assert_same(&want, &snapshot(&m.backing), "backing directory");
}

#[test]
fn a_large_file_and_concurrent_writers_come_back_intact() {
    if !privileged("a_large_file_and_concurrent_writers_come_back_intact") {
        return;
    }
    for passthrough in [false, true] {
        large_file_and_concurrent_writers(passthrough);
    }
}

fn large_file_and_concurrent_writers(passthrough: bool) {
    let m = Mounted::with_passthrough("{}", SymlinkEscape::Deny, passthrough, |_| {});
    assert_eq!(m.mount().passthrough_active(), passthrough && kernel_has_passthrough());
    let mut rng = Rng(0x5eed);
    let big = rng.bytes(64 << 20);
    {
        let mut f = fs::File::create(m.path("big.bin")).unwrap();
        for chunk in big.chunks(1 << 20) {
            f.write_all(chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    assert!(fs::read(m.path("big.bin")).unwrap() == big, "large file read back through the mount differs");
    assert!(
        fs::read(m.backing.join("big.bin")).unwrap() == big,
        "large file in the backing directory differs"
    );
    // Two handles open at once share the inode's mode (and, passed through, its backing file).
    let (a, b) = (fs::File::open(m.path("big.bin")).unwrap(), fs::File::open(m.path("big.bin")).unwrap());
    let w = OpenOptions::new().write(true).open(m.path("big.bin")).unwrap();
    w.write_all_at(b"patched", 1 << 20).unwrap();
    let (mut x, mut y) = (vec![0u8; 7], vec![0u8; 16]);
    a.read_exact_at(&mut x, 1 << 20).unwrap();
    b.read_exact_at(&mut y, (64 << 20) - 16).unwrap();
    assert_eq!((&x[..], &y[..]), (&b"patched"[..], &big[(64 << 20) - 16..]));
    drop((a, b, w));

    // Four writers, each with its own handle, interleave 4 KiB blocks of one 4 MiB file.
    const BLOCK: usize = 4096;
    const BLOCKS: usize = 1024;
    fs::File::create(m.path("shared.bin")).unwrap();
    std::thread::scope(|s| {
        for w in 0..4u8 {
            let path = m.path("shared.bin");
            s.spawn(move || {
                let f = OpenOptions::new().write(true).open(path).unwrap();
                for b in (w as usize..BLOCKS).step_by(4) {
                    f.write_all_at(&[w + 1; BLOCK], (b * BLOCK) as u64).unwrap();
                }
            });
        }
    });
    let data = fs::read(m.path("shared.bin")).unwrap();
    assert_eq!(data.len(), BLOCK * BLOCKS);
    for (b, block) in data.chunks(BLOCK).enumerate() {
        let want = (b % 4) as u8 + 1;
        assert!(block.iter().all(|&x| x == want), "block {b} is not all {want}");
    }
    assert!(fs::read(m.backing.join("shared.bin")).unwrap() == data);
}
