//! `cargo xtask setup`: installs what the build, the tests and the demo need, each step
//! skipped when already satisfied, one line per step.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::cmd::{is_root, probe, run};

/// Debian packages: iperf3 (benchmarks, tests), iproute2 (ip, ss), ethtool, iputils-ping,
/// procps, util-linux (mount, mountpoint), tmux (the `xlb top` test reads its screen); for `cargo xtask bench`, the balancers xlb is
/// compared with: haproxy, nginx with its stream module, iptables (kube-proxy's DNAT), and
/// the font its charts are drawn with; for the VM testbed (`tests/src/vm.rs`), qemu, a static
/// busybox for the guest's initramfs, cpio and kmod (depmod, modprobe) to build it; trafgen
/// (netsniff-ng), the benchmarks' small-packet generator; BIRD 2, the BGP speaker of the
/// cluster testbed's router and nodes.
const PACKAGES: &[&str] = &[
    "iperf3",
    "iproute2",
    "ethtool",
    "iputils-ping",
    "procps",
    "util-linux",
    "tmux",
    "haproxy",
    "nginx-light",
    "libnginx-mod-stream",
    "iptables",
    "fonts-dejavu-core",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "kmod",
    "netsniff-ng",
    "bird2",
];

pub fn setup() -> Result<()> {
    let root = is_root();
    rust_src()?;
    bpf_linker()?;
    debian_packages(root)?;
    bpffs(root)?;
    vm_image(root);
    Ok(())
}

/// The VM testbed's guest kernel and initramfs, cached under target/vm (the first time it
/// downloads Debian's kernel package). Not fatal: the VM test and demo build it on first use
/// and say why if they cannot.
fn vm_image(root: bool) {
    let step = "vm guest image";
    if !root {
        skipped_needs_root(step, "kernel package and initramfs into target/vm");
        return;
    }
    match xlb_testbed::prepare_vm_image() {
        Ok(image) => report(step, &format!("ok (kernel {})", image.kver)),
        Err(e) => report(step, &format!("FAILED ({e:#}); the VM test and demo retry")),
    }
}

fn report(step: &str, outcome: &str) {
    eprintln!("setup: {step}: {outcome}");
}

fn skipped_needs_root(step: &str, what: &str) {
    eprintln!("setup: {step}: SKIPPED (needs root): {what}");
}

fn rust_src() -> Result<()> {
    let step = "rust-src (nightly)";
    let installed = probe(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if installed
        .lines()
        .any(|l| l.trim() == "rust-src" || l.starts_with("rust-src-"))
    {
        report(step, "ok");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    report(step, "installed");
    Ok(())
}

/// The nightly's sysroot and LLVM major version.
fn nightly_llvm() -> Result<(PathBuf, u32)> {
    let sysroot = probe(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("`rustc +nightly --print sysroot` failed: is the nightly toolchain installed?")?;
    let vv = probe(Command::new("rustc").args(["+nightly", "-vV"]))
        .context("`rustc +nightly -vV` failed")?;
    let major =
        llvm_major_of_rustc(&vv).context("no `LLVM version: N.x` line in `rustc +nightly -vV`")?;
    Ok((PathBuf::from(sysroot.trim()), major))
}

/// From `rustc -vV`'s `LLVM version: 22.1.4`.
fn llvm_major_of_rustc(vv: &str) -> Option<u32> {
    let v = vv.lines().find_map(|l| l.strip_prefix("LLVM version: "))?;
    v.split('.').next()?.trim().parse().ok()
}

/// The LLVM major that the installed bpf-linker is dynamically linked against, from ldd;
/// `None` when it is linked statically or ldd cannot tell.
fn linker_llvm_major(linker: &Path) -> Option<u32> {
    llvm_major_of_ldd(&probe(Command::new("ldd").arg(linker))?)
}

fn llvm_major_of_ldd(ldd: &str) -> Option<u32> {
    let name = ldd.split_whitespace().find(|w| w.starts_with("libLLVM"))?;
    // libLLVM.so.22.1-rust-..., libLLVM-22.so, libLLVM.so.22
    let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
    digits
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn bpf_linker() -> Result<()> {
    let step = "bpf-linker";
    let (sysroot, major) = nightly_llvm()?;
    let works = probe(Command::new("bpf-linker").arg("--version")).is_some();
    let path = probe(Command::new("sh").args(["-c", "command -v bpf-linker"]));
    let linked = path
        .as_deref()
        .and_then(|p| linker_llvm_major(Path::new(p.trim())));
    if works && linked.is_none_or(|m| m == major) {
        report(step, &format!("ok (nightly LLVM {major})"));
        return Ok(());
    }
    let lib = sysroot.join("lib");
    let so = llvm_dylib(&lib, major)?;
    let link = lib.join("libLLVM.so");
    if !link.exists() {
        std::os::unix::fs::symlink(&so, &link)
            .with_context(|| format!("symlinking {} -> {}", link.display(), so.display()))?;
    }
    let feature = format!("llvm-{major}");
    let mut install = Command::new("cargo");
    install
        .args([
            "install",
            "bpf-linker",
            "--no-default-features",
            "--features",
            &feature,
        ])
        .env("LLVM_PREFIX", &sysroot);
    if path.is_some() {
        install.arg("--force"); // present but linked against another LLVM, or broken
    }
    run(&mut install)?;
    report(
        step,
        &format!("installed (LLVM {major} from {})", sysroot.display()),
    );
    Ok(())
}

/// `<sysroot>/lib/libLLVM.so.<major>.*-rust-*`.
fn llvm_dylib(lib: &Path, major: u32) -> Result<PathBuf> {
    let prefix = format!("libLLVM.so.{major}.");
    let entries = std::fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.contains("-rust-") {
            return Ok(e.path());
        }
    }
    bail!("no {prefix}*-rust-* in {}", lib.display())
}

fn dpkg_installed(pkg: &str) -> bool {
    probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.trim() == "install ok installed")
}

fn debian_packages(root: bool) -> Result<()> {
    let step = "debian packages";
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        report(step, &format!("ok ({})", PACKAGES.join(" ")));
        return Ok(());
    }
    if !root {
        skipped_needs_root(step, &format!("apt-get install {}", missing.join(" ")));
        return Ok(());
    }
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut c)
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&missing);
    apt(&install)?;
    report(step, &format!("installed {}", missing.join(" ")));
    Ok(())
}

fn bpffs(root: bool) -> Result<()> {
    let step = "bpffs at /sys/fs/bpf";
    if probe(Command::new("mountpoint").args(["-q", "/sys/fs/bpf"])).is_some() {
        report(step, "ok");
    } else if !root {
        skipped_needs_root(step, "mount -t bpf bpf /sys/fs/bpf");
    } else {
        run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
        report(step, "mounted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llvm_majors() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nhost: x\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major_of_rustc(vv), Some(22));
        assert_eq!(llvm_major_of_rustc("rustc 1.97.0\n"), None);
        let ldd = "\tlinux-vdso.so.1 (0x1)\n\tlibLLVM.so.22.1-rust-1.97.0-nightly => /x/lib/libLLVM.so.22.1-rust-1.97.0-nightly (0x2)\n";
        assert_eq!(llvm_major_of_ldd(ldd), Some(22));
        assert_eq!(
            llvm_major_of_ldd("\tlibLLVM-21.so => /usr/lib/libLLVM-21.so (0x3)"),
            Some(21)
        );
        assert_eq!(
            llvm_major_of_ldd("\tlibc.so.6 => /lib/libc.so.6 (0x4)"),
            None
        );
    }
}
