//! Compiles the eBPF redirect programs (`bpf/*.c`) with clang into `$OUT_DIR/redirect.bpf.o`,
//! which `src/ebpf` embeds. Missing clang or libbpf headers stop the build with the Debian
//! packages to install.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "bpf/redirect.bpf.c";
const HEADERS: &[&str] = &["bpf/redirect.h", "bpf/session.h", "bpf/own_listeners.h"];
const INCLUDE_DIRS: &[&str] = &["/usr/include", "/usr/local/include"];

fn fail(msg: &str) -> ! {
    panic!(
        "\n\nredirect: {msg}\nThe eBPF programs are C compiled by clang against libbpf's headers: install the Debian \
         packages `clang` and `libbpf-dev` (scripts/deps does), or set CLANG to a clang binary.\n\n"
    );
}

/// The Debian multiarch include dir (for `asm/types.h`), which `-target bpf` does not search.
fn multiarch_dir(arch: &str) -> Option<PathBuf> {
    let triple = match arch {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        _ => return None,
    };
    let dir = Path::new("/usr/include").join(triple);
    dir.is_dir().then_some(dir)
}

/// The `__TARGET_ARCH_*` libbpf expects.
fn target_arch_define(arch: &str) -> &'static str {
    match arch {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        "riscv64" => "riscv",
        "powerpc64" => "powerpc",
        "s390x" => "s390",
        _ => "x86",
    }
}

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    for h in HEADERS {
        println!("cargo:rerun-if-changed={h}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    match Command::new(&clang).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(_) => fail(&format!("`{clang} --version` failed")),
        Err(e) => fail(&format!("cannot run `{clang}`: {e}")),
    }
    if !INCLUDE_DIRS.iter().any(|d| Path::new(d).join("bpf/bpf_helpers.h").is_file()) {
        fail("bpf/bpf_helpers.h not found under /usr/include or /usr/local/include");
    }

    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("redirect.bpf.o");
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{}", target_arch_define(&arch)));
    if let Some(dir) = multiarch_dir(&arch) {
        cmd.arg("-I").arg(dir);
    }
    cmd.arg("-c").arg(SOURCE).arg("-o").arg(&out);
    match cmd.status() {
        Ok(st) if st.success() => {}
        Ok(st) => panic!("redirect: clang failed to compile {SOURCE} ({st}); see its messages above"),
        Err(e) => fail(&format!("cannot run `{clang}`: {e}")),
    }
}
