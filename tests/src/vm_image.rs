//! The VM testbed's guest image: Debian's own kernel package (`linux-image-amd64`, fetched
//! with `apt-get download` into a cache under `target/vm/` and unpacked with dpkg-deb, so the
//! system's packages are untouched) and an initramfs of busybox, the modules the guest needs
//! and an `/init` that mounts the host's root read-only over 9p and runs the guest agent.
//! Built once; a later run finds it in the cache and downloads nothing.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::proc;

/// The kernel metapackage; its one versioned dependency is the image we fetch. The generic
/// flavour: the cloud kernel has no 9p.
const KERNEL_META: &str = "linux-image-amd64";
/// Modules the initramfs loads, with their dependencies (virtio NICs and 9p for the guest
/// itself; netfilter for the iptables DNAT the benchmarks compare with).
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "9pnet_virtio",
    "9p",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nf_nat",
    "nf_conntrack",
    "xt_statistic",
    "xt_nat",
    "xt_conntrack",
    "xt_comment",
    "xt_mark",
    "xt_tcpudp",
    "xt_addrtype",
    "xt_MASQUERADE",
    "ip_tables",
    "iptable_nat",
    "iptable_filter",
];
/// Bumped whenever [`MODULES`] or [`INIT`] change, so a cached image is rebuilt.
const IMAGE_VERSION: u32 = 3;
/// Where the guest sees the host's whole root: its `/tmp`, `/root`, `/var/lib` ... are tmpfs
/// in the guest, so a host path is reached under this prefix.
pub const GUEST_HOST_ROOT: &str = "/run/hostroot";
/// How long fetching and unpacking the kernel package may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(600);
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// The initramfs's `/init`: modules, the host's root over 9p (read-only) at /host, the VM's
/// share (read-write) at /host/mnt, the usual pseudo file systems and tmpfs where programs
/// write, the host's root once more at /run/hostroot (see [`GUEST_HOST_ROOT`]), then the
/// agent chrooted into the host's root.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
while read -r ko; do insmod /lib/modules/$ko || echo "init: insmod $ko failed"; done < /modules.order
o=trans=virtio,version=9p2000.L,msize=524288
mount -t 9p -o $o,ro,cache=loose hostroot /host || { echo "init: 9p hostroot failed"; poweroff -f; }
mount -t 9p -o $o share /host/mnt || { echo "init: 9p share failed"; poweroff -f; }
mount -t proc proc /host/proc; mount -t sysfs sysfs /host/sys; mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts && mount -t devpts devpts /host/dev/pts
for d in tmp run var/tmp var/log var/lib root; do mount -t tmpfs tmpfs /host/$d; done
# The whole host root again, without the tmpfs above, so that host paths under /tmp,
# /root or /var/lib (a workspace cloned there) stay reachable: at /run/hostroot.
mkdir -p /host/run/hostroot && mount -o bind /host /host/run/hostroot
mount -t bpf bpf /host/sys/fs/bpf
echo "init: chroot at $(cut -d' ' -f1 /proc/uptime)s"
chroot /host /bin/bash /mnt/agent.sh
echo "init: agent exited, powering off"
poweroff -f
"#;

/// A guest kernel and its initramfs, in the cache.
#[derive(Debug, Clone)]
pub struct Image {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The kernel release, e.g. `6.1.0-57-amd64`.
    pub kver: String,
}

/// `<target dir>/vm`: `$CARGO_TARGET_DIR` or the workspace's `target/`.
pub fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("vm")
}

/// The cached image, built first if missing or outdated (needs root, apt and network the
/// first time; `cargo xtask setup` does it).
pub fn prepare() -> Result<Image> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = lock(&dir.join(".lock"))?;
    let stamp = dir.join("image.stamp");
    if let Some(image) = cached(&dir, &stamp) {
        return Ok(image);
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        bail!("no /bin/busybox: install busybox-static (`cargo xtask setup`)");
    }
    let img = resolve_image()?;
    let deb = download(&dir.join("debs"), &img)?;
    let kroot = dir.join("kernel");
    let _ = std::fs::remove_dir_all(&kroot);
    std::fs::create_dir_all(&kroot)?;
    long(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&kroot),
        FETCH_TIMEOUT,
    )?;
    let kver = only_entry(&kroot.join("lib/modules"))?;
    // The package ships no modules.dep (its postinst makes it).
    long(
        Command::new("depmod").arg("-b").arg(&kroot).arg(&kver),
        BUILD_TIMEOUT,
    )?;
    build_initramfs(&dir, &kroot, &kver, busybox)?;
    // Only vmlinuz and the initramfs are booted; the unpacked modules (400 MB) go, the .deb
    // stays for a rebuild without a download.
    for d in [kroot.join("lib"), kroot.join("usr"), dir.join("initramfs")] {
        let _ = std::fs::remove_dir_all(d);
    }
    std::fs::write(&stamp, format!("{IMAGE_VERSION} {kver}\n"))?;
    cached(&dir, &stamp).context("the image just built is incomplete")
}

/// The image the stamp names, if it is of this version and its files exist.
fn cached(dir: &Path, stamp: &Path) -> Option<Image> {
    let text = std::fs::read_to_string(stamp).ok()?;
    let (version, kver) = text.trim().split_once(' ')?;
    if version.parse::<u32>().ok()? != IMAGE_VERSION {
        return None;
    }
    let image = Image {
        kernel: dir.join(format!("kernel/boot/vmlinuz-{kver}")),
        initramfs: dir.join("initramfs.cpio.gz"),
        kver: kver.to_owned(),
    };
    (image.kernel.is_file() && image.initramfs.is_file()).then_some(image)
}

/// An exclusive flock on `path`, held until the file is dropped (two test binaries may
/// prepare at once).
fn lock(path: &Path) -> Result<File> {
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: flock(2) on an fd we own; blocks until the lock is ours.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error()).context("flock");
    }
    Ok(f)
}

/// The versioned image package the metapackage depends on (a glob would match every
/// version apt knows of).
fn resolve_image() -> Result<String> {
    let depends = || {
        proc::run(Command::new("apt-cache").args(["depends", KERNEL_META]))
            .ok()
            .and_then(|out| parse_depends(&out))
    };
    if let Some(img) = depends() {
        return Ok(img);
    }
    // A machine that never ran apt-get update knows no packages.
    long(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        FETCH_TIMEOUT,
    )?;
    depends().with_context(|| format!("apt knows no {KERNEL_META}: check the apt sources"))
}

/// From `apt-cache depends linux-image-amd64`: the `Depends: linux-image-<version>` line.
fn parse_depends(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| {
            p.strip_prefix("linux-image-")
                .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(str::to_owned)
}

/// `apt-get download <img>` into `debs` unless a .deb of it is there already.
fn download(debs: &Path, img: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(debs)?;
    let find = || -> Option<PathBuf> {
        let prefix = format!("{img}_");
        std::fs::read_dir(debs).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with(&prefix) && name.ends_with(".deb")).then(|| e.path())
        })
    };
    if let Some(deb) = find() {
        return Ok(deb);
    }
    long(
        Command::new("apt-get")
            .args(["download", "-q", img])
            .current_dir(debs),
        FETCH_TIMEOUT,
    )?;
    find().with_context(|| format!("apt-get download {img} left no .deb in {}", debs.display()))
}

fn only_entry(dir: &Path) -> Result<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one kernel in {}, found {names:?}", dir.display()),
    }
}

/// busybox, [`MODULES`] in dependency order (plain .ko: busybox insmod cannot decompress)
/// and [`INIT`], as a gzipped newc cpio.
fn build_initramfs(dir: &Path, kroot: &Path, kver: &str, busybox: &Path) -> Result<()> {
    let tree = dir.join("initramfs");
    let _ = std::fs::remove_dir_all(&tree);
    for d in ["bin", "dev", "proc", "sys", "host", "lib/modules"] {
        std::fs::create_dir_all(tree.join(d))?;
    }
    std::fs::copy(busybox, tree.join("bin/busybox"))?;
    let mut order = Vec::<String>::new();
    for m in MODULES {
        let deps = proc::run(Command::new("modprobe").arg("-d").arg(kroot).args([
            "-S",
            kver,
            "--show-depends",
            m,
        ]))?;
        for ko in deps.lines().filter_map(|l| l.strip_prefix("insmod ")) {
            let ko = ko.split_whitespace().next().unwrap_or_default();
            let file = Path::new(ko).file_name().unwrap_or_default();
            let file = file.to_string_lossy();
            let plain = file
                .trim_end_matches(".xz")
                .trim_end_matches(".zst")
                .to_owned();
            if order.contains(&plain) {
                continue;
            }
            let out = tree.join("lib/modules").join(&plain);
            if file.ends_with(".xz") || file.ends_with(".zst") {
                let tool = if file.ends_with(".xz") { "xz" } else { "zstd" };
                let data =
                    proc::output_timeout(Command::new(tool).args(["-dc", ko]), BUILD_TIMEOUT)?;
                if !data.status.success() {
                    bail!("{tool} -dc {ko} failed");
                }
                std::fs::write(&out, data.stdout)?;
            } else {
                std::fs::copy(ko, &out).with_context(|| format!("copying {ko}"))?;
            }
            order.push(plain);
        }
    }
    std::fs::write(tree.join("modules.order"), order.join("\n") + "\n")?;
    let init = tree.join("init");
    std::fs::write(&init, INIT)?;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = dir.join("initramfs.cpio.gz");
    let tmp = dir.join("initramfs.cpio.gz.tmp");
    let script = format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        tree.display(),
        tmp.display()
    );
    long(Command::new("sh").args(["-c", &script]), BUILD_TIMEOUT)?;
    std::fs::rename(&tmp, &out)?;
    Ok(())
}

/// [`proc::run`] with a longer limit.
fn long(cmd: &mut Command, timeout: Duration) -> Result<()> {
    let out = proc::output_timeout(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            proc::describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_versioned_image() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            parse_depends(out).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        let signed = "linux-image-amd64\n  Depends: linux-image-amd64-signed-template\n";
        assert_eq!(parse_depends(signed), None);
    }
}
