//! The `TABLES` map seen through its memory mapping (it is created `BPF_F_MMAPABLE`): a
//! table change is plain stores of the changed slots, with no syscall per slot.

use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};

use lb_common::TABLES_MMAP_STRIDE;

/// A shared, writable mapping of all `slots` of `TABLES`.
pub struct TableMem {
    base: NonNull<u8>,
    len: usize,
    slots: u32,
}

// SAFETY: the mapping is plain shared memory owned by this value alone (unmapped on drop);
// every access goes through atomics, so moving it to another thread is sound.
unsafe impl Send for TableMem {}

impl TableMem {
    /// Maps the `slots` slots of the array map `fd`.
    ///
    /// # Errors
    /// When the map cannot be mapped (not created `BPF_F_MMAPABLE`, or fewer slots).
    pub fn new(fd: BorrowedFd<'_>, slots: u32) -> io::Result<TableMem> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = (slots as usize * TABLES_MMAP_STRIDE).div_ceil(page) * page;
        // SAFETY: a new shared mapping of `len` bytes at an address the kernel picks; the
        // kernel refuses a length beyond the map's values.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(TableMem { base, len, slots })
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    fn slot(&self, i: u32) -> &AtomicU32 {
        assert!(i < self.slots, "slot {i} outside the table area");
        // SAFETY: slot `i` is the u32 at byte `i * 8` of the mapping (the kernel stores an
        // array's values 8-byte aligned), inside `len`; the kernel and other mappings may
        // read or write it concurrently, hence an atomic, which has u32's layout.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(i as usize * TABLES_MMAP_STRIDE)
                .cast::<AtomicU32>()
        }
    }

    /// The `len` slots from `offset` (callers check the range).
    pub fn read(&self, offset: u32, len: u32) -> Vec<u32> {
        (offset..offset + len)
            .map(|i| self.slot(i).load(Ordering::Relaxed))
            .collect()
    }

    /// Stores each `(slot, value)` (callers check the range). The release fence orders
    /// them before whatever the caller does next, such as the flip that publishes them
    /// (x86 keeps stores in order anyway; the syscall of the flip is a barrier too).
    pub fn write(&mut self, slots: &[(u32, u32)]) {
        for &(i, v) in slots {
            self.slot(i).store(v, Ordering::Relaxed);
        }
        fence(Ordering::Release);
    }
}

impl Drop for TableMem {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are the mapping made in `new`, unmapped only here.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
