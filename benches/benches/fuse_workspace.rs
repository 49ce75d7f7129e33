//! The FUSE workspace side by side with the raw directory: untar a source-like tree, `grep -r`
//! it (fresh, then again as a build re-reading its sources would), list it with attributes
//! (`ls -lR`), `grep -r` a tree the kernel has not seen yet (made in the backing directory, as a
//! session's workspace is at its start), write many small files, read one large file
//! sequentially. Four setups: the raw directory, the mount served by the daemon, the mount
//! with kernel passthrough (when the kernel grants it), and the peer: `bindfs`, a libfuse
//! mirror of a directory that applies no policy (when installed; `scripts/deps` installs it).
//! Prints the median of several runs and the ratio to raw for each.
//!
//! Needs root (it mounts FUSE); without it, it says so and exits 0. `AGENTSH_BENCH_FUSE_THREADS`
//! sets the number of FUSE worker threads (default 2).
//!
//! Every request is two wakeups (the caller's to a worker, the reply's back), so the figures
//! swing with where the scheduler puts the workers and the workload: across CPUs each wakeup
//! may cost an inter-processor interrupt, dear on a virtual machine. Run it under
//! `taskset -c N` for a steady comparison (everything on one CPU), and without for the spread
//! a real session sees. The load average is printed with the figures.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use policies::engine::file::FileRules;
use sandbox::workspace::{FileEvent, FileEventSink, SymlinkEscape, WorkspaceConfig, WorkspaceMount};

const RUNS: usize = 5;
const TREE_DIRS: usize = 60;
const TREE_FILES_PER_DIR: usize = 50;
const SMALL_FILES: usize = 2000;
const LARGE_MIB: usize = 256;

/// Counts events the way a real sink would queue them: cheaply.
struct Counter(std::sync::atomic::AtomicU64);

impl FileEventSink for Counter {
    fn event(&self, _event: FileEvent) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A tarball of `TREE_DIRS` × `TREE_FILES_PER_DIR` small text files.
fn make_tarball(scratch: &Path) -> PathBuf {
    let src = scratch.join("tree");
    for d in 0..TREE_DIRS {
        let dir = src.join(format!("mod{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..TREE_FILES_PER_DIR {
            let body: String =
                (0..40).map(|l| format!("fn item_{d}_{f}_{l}() -> u32 {{ {l} }} // filler text\n")).collect();
            fs::write(dir.join(format!("file{f}.rs")), body).unwrap();
        }
    }
    let tar = scratch.join("tree.tar");
    run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&src).arg("."));
    fs::remove_dir_all(&src).unwrap();
    tar
}

/// Times each workload once in `dir` (served from `backing`); returns (name, duration) pairs.
fn workloads(dir: &Path, backing: &Path, tar: &Path, large: &Path) -> Vec<(&'static str, Duration)> {
    let mut out = Vec::new();
    let tree = dir.join("tree");
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(&tree).unwrap();
    let t = Instant::now();
    run(Command::new("tar").arg("-xf").arg(tar).arg("-C").arg(&tree));
    out.push(("untar", t.elapsed()));

    let t = Instant::now();
    let grep = Command::new("grep").arg("-rc").arg("item_7_7_7").arg(&tree).output().unwrap();
    assert!(!grep.stdout.is_empty());
    out.push(("grep -r", t.elapsed()));

    let t = Instant::now();
    let again = Command::new("grep").arg("-rc").arg("item_7_7_7").arg(&tree).output().unwrap();
    assert_eq!(again.stdout, grep.stdout);
    out.push(("grep -r again", t.elapsed()));

    let t = Instant::now();
    let ls = Command::new("ls").arg("-lR").arg(&tree).output().unwrap();
    assert!(ls.status.success() && ls.stdout.len() > TREE_DIRS * TREE_FILES_PER_DIR * 20);
    out.push(("ls -lR", t.elapsed()));

    // Made behind the mount and removed through it (so the kernel holds none of these names,
    // nor their absence, when they come back).
    let cold = dir.join("cold");
    fs::create_dir_all(backing.join("cold")).unwrap();
    run(Command::new("tar").arg("-xf").arg(tar).arg("-C").arg(backing.join("cold")));
    let t = Instant::now();
    let first = Command::new("grep").arg("-rc").arg("item_7_7_7").arg(&cold).output().unwrap();
    assert!(first.status.success() && !first.stdout.is_empty());
    out.push(("grep -r cold", t.elapsed()));
    fs::remove_dir_all(&cold).unwrap();

    let small = dir.join("small");
    let _ = fs::remove_dir_all(&small);
    fs::create_dir_all(&small).unwrap();
    let block = [b'x'; 1024];
    let t = Instant::now();
    for i in 0..SMALL_FILES {
        let mut f = fs::File::create(small.join(format!("f{i}"))).unwrap();
        f.write_all(&block).unwrap();
    }
    out.push(("small writes", t.elapsed()));

    let t = Instant::now();
    let mut f = fs::File::open(large).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, LARGE_MIB << 20);
    out.push(("large read", t.elapsed()));

    fs::remove_dir_all(&tree).unwrap();
    fs::remove_dir_all(&small).unwrap();
    out
}

fn mount(backing: &Path, mnt: &Path, trash: &Path, passthrough: bool) -> WorkspaceMount {
    let rules = FileRules::new(&[], mnt, &|_| None);
    let config = WorkspaceConfig {
        backing: backing.to_path_buf(),
        sandbox_path: mnt.to_path_buf(),
        rules,
        symlink_escape: SymlinkEscape::Deny,
        trash_dir: trash.to_path_buf(),
        events: Arc::new(Counter(Default::default())),
        threads: std::env::var("AGENTSH_BENCH_FUSE_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2),
        passthrough,
        xattrs: false,
    };
    WorkspaceMount::mount(config, mnt).expect("mount")
}

/// What serves a setup's directory.
enum Served {
    Raw,
    Workspace(WorkspaceMount),
    /// A `bindfs` mount at this path.
    Peer(PathBuf),
}

/// One setup: where the workloads run, and what serves it.
struct Setup {
    label: &'static str,
    dir: PathBuf,
    backing: PathBuf,
    served: Served,
    times: Vec<Vec<(&'static str, Duration)>>,
}

/// Mounts `backing` at `mnt` with bindfs, or says why not.
fn mount_peer(backing: &Path, mnt: &Path) -> Result<(), String> {
    let out = Command::new("bindfs").arg(backing).arg(mnt).output().map_err(|e| format!("bindfs: {e}"))?;
    if !out.status.success() {
        return Err(format!("bindfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

fn main() {
    // `cargo bench` passes harness flags such as --bench; nothing here takes arguments.
    if !std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0) {
        eprintln!("fuse_workspace: skipped, mounting FUSE needs root");
        return;
    }
    // On tmpfs when there is one, so disk writeback does not drown the difference measured.
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let scratch = base.join(format!("agentsh-bench-fuse-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).unwrap();
    let tar = make_tarball(&scratch);
    let large_data: Vec<u8> = (0..LARGE_MIB << 20).map(|i| (i * 31 % 251) as u8).collect();
    let mut setups = Vec::new();
    for (n, label) in ["raw", "fuse", "fuse+passthrough", "bindfs (peer)"].into_iter().enumerate() {
        let backing = scratch.join(format!("{n}-backing"));
        fs::create_dir_all(&backing).unwrap();
        fs::write(backing.join("large.bin"), &large_data).unwrap();
        let mnt = scratch.join(format!("{n}-mnt"));
        if n > 0 {
            fs::create_dir_all(&mnt).unwrap();
        }
        let (dir, served, label) = match n {
            0 => (backing.clone(), Served::Raw, label),
            1 | 2 => {
                let m = mount(&backing, &mnt, &scratch.join(format!("{n}-trash")), n == 2);
                let label =
                    if n == 2 && !m.passthrough_active() { "fuse (passthrough refused)" } else { label };
                (mnt, Served::Workspace(m), label)
            }
            _ => match mount_peer(&backing, &mnt) {
                Ok(()) => (mnt.clone(), Served::Peer(mnt), label),
                Err(why) => {
                    println!("fuse_workspace: no peer column ({why}; scripts/deps installs bindfs)");
                    continue;
                }
            },
        };
        setups.push(Setup { label, dir, backing, served, times: Vec::new() });
    }
    drop(large_data);

    // Interleaved, so a burst of load elsewhere on the machine hits every setup alike; the
    // first round warms caches and is not counted.
    for round in 0..=RUNS {
        for s in &mut setups {
            let t = workloads(&s.dir, &s.backing, &tar, &s.dir.join("large.bin"));
            if round > 0 {
                s.times.push(t);
            }
        }
    }

    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "fuse_workspace: {} files untarred and grepped, {SMALL_FILES} x 1 KiB writes, {LARGE_MIB} MiB read; \
         median of {RUNS} interleaved runs, backing on {}; load average {}",
        TREE_DIRS * TREE_FILES_PER_DIR,
        base.display(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    print!("{:<16}", "workload");
    for s in &setups {
        print!("{:>28}", s.label);
    }
    println!();
    let medians: Vec<Vec<Duration>> = setups
        .iter()
        .map(|s| (0..s.times[0].len()).map(|i| median(s.times.iter().map(|r| r[i].1).collect())).collect())
        .collect();
    for (i, (name, _)) in setups[0].times[0].iter().enumerate() {
        let base = medians[0][i].as_secs_f64();
        print!("{name:<16}");
        for m in &medians {
            let d = m[i].as_secs_f64();
            print!("{:>28}", format!("{:.1} ms ({:.2}x)", d * 1e3, d / base));
        }
        println!();
    }
    for s in setups {
        match s.served {
            Served::Raw => {}
            Served::Workspace(m) => m.unmount().expect("unmount"),
            Served::Peer(mnt) => run(Command::new("umount").arg(&mnt)),
        }
    }
    let _ = fs::remove_dir_all(&scratch);
}
