//! Grace periods of the data path: waits until every XDP program that was running when the
//! wait started has returned, run on a background thread so that a change does not block
//! on one unless it must (see `state::publish` for why table writes need them).
//!
//! Userspace has no `synchronize_rcu()`, but one bpf(2) command includes it: updating an
//! element of a map-in-map. `maybe_wait_bpf_programs()` in kernel/bpf/syscall.c calls
//! `synchronize_rcu()` for `BPF_MAP_TYPE_{ARRAY,HASH}_OF_MAPS` "so that userspace, when we
//! return to it, knows that all programs that could be running use the new map value"
//! (commit 1ae80cf31938, Linux 4.20). In 6.1 it runs at the end of `bpf_map_update_value()`,
//! in 6.18 after a successful `map_update_elem()`; the kernel's selftests rely on it the
//! same way (`kern_sync_rcu()`). We keep a private one-slot `ARRAY_OF_MAPS` that no program
//! uses and store the same inner map into it: the update changes nothing but waits.
//!
//! `synchronize_rcu()` covers XDP: programs run with `rcu_read_lock()` held (generic XDP,
//! BPF_PROG_TEST_RUN, veth) or in NAPI poll with bottom halves disabled, which RCU treats
//! as a read-side section too since the flavours were consolidated (4.20). A grace period
//! takes about 4-20 ms here, hence the background thread.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::dataplane::GraceTicket;

/// bpf(2) commands and map types (stable UAPI numbers from linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The leading fields of `union bpf_attr` for BPF_MAP_CREATE (the kernel zero-fills the
/// rest of the union when the size passed is smaller).
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

/// `union bpf_attr` for BPF_MAP_UPDATE_ELEM.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Calls bpf(2) with `attr`.
fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `#[repr(C)]` prefix of `union bpf_attr` for
    // `cmd`, and its size is passed along, so the kernel reads no further.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn create_map(attr: &mut MapCreateAttr) -> io::Result<OwnedFd> {
    let fd = sys_bpf(BPF_MAP_CREATE, attr)?;
    // SAFETY: BPF_MAP_CREATE returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// The map-in-map whose update waits for a grace period.
struct Barrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl Barrier {
    fn new() -> io::Result<Barrier> {
        let inner = create_map(&mut MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_flags: 0,
            inner_map_fd: 0,
        })?;
        let outer = create_map(&mut MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_flags: 0,
            inner_map_fd: inner.as_raw_fd() as u32,
        })?;
        Ok(Barrier { outer, inner })
    }

    /// Returns after an RCU grace period that began during the call.
    fn synchronize(&self) -> io::Result<()> {
        let key: u32 = 0;
        let value: u32 = self.inner.as_raw_fd() as u32;
        let mut attr = MapElemAttr {
            map_fd: self.outer.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: 0, // BPF_ANY
        };
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }
}

#[derive(Default)]
struct State {
    /// The last ticket handed out.
    requested: GraceTicket,
    /// Every ticket up to this one has ended.
    completed: GraceTicket,
    /// Why the barrier failed; every wait fails from then on.
    failed: Option<String>,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters: still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Grace periods run one after another on a thread of their own; one run covers every
/// ticket handed out before it began.
pub struct GracePeriods {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GracePeriods {
    /// Makes the map-in-map and starts the thread.
    ///
    /// # Errors
    /// When the kernel refuses to create the maps.
    pub fn new() -> io::Result<GracePeriods> {
        let barrier = Barrier::new()?;
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("xlb-grace".into())
            .spawn(move || run(&s, &barrier))?;
        Ok(GracePeriods {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a grace period that begins after this call; returns its ticket.
    pub fn start(&self) -> GraceTicket {
        let mut st = self.shared.lock();
        st.requested += 1;
        self.shared.changed.notify_all();
        st.requested
    }

    /// Blocks until the grace period of `ticket` has ended.
    ///
    /// # Errors
    /// When the kernel refused the map update that waits (then it never ends).
    pub fn wait(&self, ticket: GraceTicket) -> Result<(), String> {
        let mut st = self.shared.lock();
        loop {
            if st.completed >= ticket {
                return Ok(());
            }
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The thread: waits for a request, then runs one grace period for every ticket handed
/// out so far. The ticket is read before the grace period begins, and each ticket was
/// handed out after its caller's flip, so the grace period began after that flip.
fn run(shared: &Shared, barrier: &Barrier) {
    let mut st = shared.lock();
    loop {
        while st.requested == st.completed && !st.stop {
            st = shared.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.stop {
            return;
        }
        let target = st.requested;
        drop(st);
        let result = barrier.synchronize();
        st = shared.lock();
        match result {
            Ok(()) => st.completed = target,
            Err(e) => {
                st.failed = Some(format!("update of a map-in-map refused: {e}"));
                shared.changed.notify_all();
                return;
            }
        }
        shared.changed.notify_all();
    }
}

impl Drop for GracePeriods {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn tickets_end_in_order_and_one_run_covers_many() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED (needs root): tickets_end_in_order_and_one_run_covers_many");
            return;
        }
        let g = GracePeriods::new().expect("creating the map-in-map");
        let t0 = Instant::now();
        let a = g.start();
        let b = g.start();
        assert!(b > a);
        g.wait(b).unwrap();
        // Waiting for an ended ticket returns at once.
        let t1 = Instant::now();
        g.wait(a).unwrap();
        assert!(t1.elapsed() < t0.elapsed());
        let c = g.start();
        g.wait(c).unwrap();
        assert_eq!(g.shared.lock().completed, c);
    }

    #[test]
    fn the_barrier_waits_for_a_grace_period() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED (needs root): the_barrier_waits_for_a_grace_period");
            return;
        }
        // An update of an ordinary array returns in microseconds; one of the map-in-map
        // blocks in synchronize_rcu(), which takes at least a scheduler tick or so on a
        // machine with more than one CPU. Compare the fastest of a few of each.
        // SAFETY: sysconf has no preconditions.
        if unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } < 2 {
            // With one CPU and no preemptible readers the kernel may end it at once.
            eprintln!("SKIPPED (needs 2 CPUs): the_barrier_waits_for_a_grace_period");
            return;
        }
        let b = Barrier::new().unwrap();
        let fastest = |f: &dyn Fn()| {
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed()
                })
                .min()
                .unwrap()
        };
        let plain = fastest(&|| {
            let key: u32 = 0;
            let value: u32 = 1;
            let mut attr = MapElemAttr {
                map_fd: b.inner.as_raw_fd() as u32,
                _pad: 0,
                key: &key as *const u32 as u64,
                value: &value as *const u32 as u64,
                flags: 0,
            };
            sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).unwrap();
        });
        let synced = fastest(&|| b.synchronize().unwrap());
        assert!(
            synced > plain * 10,
            "map-in-map update {synced:?} vs array update {plain:?}"
        );
    }
}
