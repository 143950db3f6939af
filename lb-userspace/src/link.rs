//! What the daemon tells the operator about its interfaces: a warning for one that is down
//! or has no carrier, and why native XDP refuses one whose MTU is too large. The flags and
//! the MTU come from ioctls on a socket, so they are those of the daemon's own network
//! namespace, where it attaches (sysfs may show another namespace's).

use std::ffi::c_int;
use std::io;

use crate::limits::cut;

/// What the kernel says of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    /// Administratively up (`ip link set IF up`).
    pub up: bool,
    /// Up with a carrier: packets can arrive (`IFF_RUNNING`; a veth whose peer is down
    /// has none).
    pub running: bool,
    pub mtu: u32,
}

/// The flags and MTU of `iface` in this network namespace.
pub fn state(iface: &str) -> io::Result<LinkState> {
    let flags = ioctl(iface, libc::SIOCGIFFLAGS)?;
    let mtu = ioctl(iface, libc::SIOCGIFMTU)?;
    Ok(LinkState {
        up: flags & libc::IFF_UP != 0,
        running: flags & libc::IFF_RUNNING != 0,
        mtu: mtu as u32,
    })
}

/// One line for the log when `iface` cannot receive packets yet; `None` when it can (or
/// when its state cannot be read: attaching will say what is wrong).
pub fn down_warning(iface: &str) -> Option<String> {
    let s = state(iface).ok()?;
    down_message(iface, s)
}

fn down_message(iface: &str, s: LinkState) -> Option<String> {
    let name = cut(iface);
    if !s.up {
        Some(format!(
            "interface {name} is DOWN: XDP is attached but sees no packets until it is up (ip link set {name} up)"
        ))
    } else if !s.running {
        Some(format!(
            "interface {name} is up but has no carrier (a veth: its peer is down): XDP sees no packets until it has"
        ))
    } else {
        None
    }
}

/// Why native XDP refused `iface` with `ERANGE`: its MTU (or a veth peer's) is larger than
/// the driver's XDP buffer, one page less headroom and the shared-info tail.
pub fn mtu_too_large(iface: &str) -> String {
    let name = cut(iface);
    let has = state(iface)
        .map(|s| format!("{name} has MTU {}", s.mtu))
        .unwrap_or_else(|_| format!("the MTU of {name} is unknown"));
    format!(
        "MTU too large for native XDP on this driver: {has}, and veth and virtio-net take at most about 3500 bytes with {} KiB pages (for a veth, its peer's MTU counts); lower the MTU or use --mode skb",
        page_size() / 1024
    )
}

fn page_size() -> i64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n,
        _ => 4096,
    }
}

/// `SIOCGIFFLAGS` or `SIOCGIFMTU` on `iface`: the flags or the MTU.
fn ioctl(iface: &str, request: libc::c_ulong) -> io::Result<c_int> {
    let name = iface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    // SAFETY: socket has no memory preconditions; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name (checked shorter than
    // IFNAMSIZ, rest zeroed); both requests only write into it.
    let rc = unsafe { libc::ioctl(fd, request as _, &mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err);
    }
    // SAFETY: the kernel wrote the union member the request names.
    Ok(unsafe {
        if request == libc::SIOCGIFMTU {
            req.ifr_ifru.ifru_mtu
        } else {
            c_int::from(req.ifr_ifru.ifru_flags)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_and_carrierless_links_get_one_line() {
        let cases = [
            (
                false,
                false,
                Some(
                    "interface veth0 is DOWN: XDP is attached but sees no packets until it is up (ip link set veth0 up)",
                ),
            ),
            (
                true,
                false,
                Some(
                    "interface veth0 is up but has no carrier (a veth: its peer is down): XDP sees no packets until it has",
                ),
            ),
            (true, true, None),
        ];
        for (up, running, want) in cases {
            let s = LinkState {
                up,
                running,
                mtu: 1500,
            };
            assert_eq!(down_message("veth0", s).as_deref(), want, "{s:?}");
        }
        let w = down_message(
            "a\nb",
            LinkState {
                up: false,
                running: false,
                mtu: 0,
            },
        )
        .unwrap();
        assert!(!w.contains('\n'), "{w}");
    }

    #[test]
    fn loopback_is_read_and_missing_links_are_errors() {
        let lo = state("lo").expect("lo");
        assert_eq!(lo.mtu, 65536);
        assert!(state("xlb-no-such-if0").is_err());
        assert!(state("").is_err());
        assert!(state(&"x".repeat(100)).is_err());
        assert_eq!(down_warning("xlb-no-such-if0"), None);
        let m = mtu_too_large("lo");
        assert_eq!(
            m,
            format!(
                "MTU too large for native XDP on this driver: lo has MTU 65536, and veth and virtio-net take at most about 3500 bytes with {} KiB pages (for a veth, its peer's MTU counts); lower the MTU or use --mode skb",
                page_size() / 1024
            )
        );
    }

    /// Runs `f` on a thread in a new, private network namespace (needs root).
    fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED (needs root)");
            return None;
        }
        let t = std::thread::spawn(move || {
            // SAFETY: unshare affects only this thread's network namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            f()
        });
        Some(t.join().unwrap())
    }

    #[test]
    fn a_new_namespace_has_its_loopback_down() {
        let w = in_private_netns(|| (state("lo").unwrap(), down_warning("lo")));
        if let Some((s, w)) = w {
            assert!(!s.up && !s.running, "{s:?}");
            assert!(w.unwrap().starts_with("interface lo is DOWN"));
        }
    }
}
