//! Guest memory: anonymous, private, MAP_NORESERVE (a page costs host memory only once the
//! guest touches it), never inherited by a child the VMM forks, registered with KVM, and
//! offered to page merging (KSM) when the VM asks.

use kvm_bindings::kvm_userspace_memory_region;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::{arch, io, Error, Result};

/// Offer `len` bytes at `addr` (a guest memory mapping) to KSM; false on failure (errno set).
fn merge(addr: *mut u8, len: usize) -> bool {
    // SAFETY: madvise on a live mapping of guest memory; MADV_MERGEABLE only lets KSM scan
    // and merge its pages (copy-on-write, so the guest sees no change).
    unsafe { libc::madvise(addr.cast(), len, libc::MADV_MERGEABLE) == 0 }
}

/// Keep `len` bytes at `addr` (a guest memory mapping) off transparent huge pages; false on
/// failure (errno set).
fn small(addr: *mut u8, len: usize) -> bool {
    // SAFETY: madvise on a live mapping of guest memory; it only changes how the kernel backs
    // it.
    unsafe { libc::madvise(addr.cast(), len, libc::MADV_NOHUGEPAGE) == 0 }
}

/// `bytes` of guest RAM in the arch's layout, mapped here and given to `vm`; offered to the
/// kernel's page merging (KSM) when `mergeable`; never backed by transparent huge pages when
/// `small_pages` (a VM with a balloon: it gives back 4 KiB pages and small free blocks, and
/// khugepaged would fill those holes again, collapsing any 2 MiB range with a page left in it).
pub(crate) fn guest_memory(
    vm: &kvm_ioctls::VmFd,
    bytes: u64,
    mergeable: bool,
    small_pages: bool,
) -> Result<GuestMemoryMmap> {
    let ranges = arch::ram_ranges(bytes)?;
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&ranges).map_err(|e| Error::boot("guest memory", e))?;
    for (slot, r) in mem.iter().enumerate() {
        // A process the VMM forks (the vsock socket's reaper) must not share guest memory:
        // copy-on-write would keep, for that child, every page touched before the fork (the
        // loaded kernel) and the guest would get a second copy of each page it writes.
        // SAFETY: madvise on a mapping `mem` owns; it changes only what fork(2) inherits.
        if unsafe { libc::madvise(r.as_ptr().cast(), r.len() as usize, libc::MADV_DONTFORK) } < 0 {
            return Err(io("guest memory: madvise")(std::io::Error::last_os_error()));
        }
        if small_pages && !small(r.as_ptr(), r.len() as usize) {
            return Err(io("guest memory: madvise MADV_NOHUGEPAGE")(
                std::io::Error::last_os_error(),
            ));
        }
        if mergeable && !merge(r.as_ptr(), r.len() as usize) {
            let e = std::io::Error::last_os_error();
            let what = if e.raw_os_error() == Some(libc::EINVAL) {
                "guest memory: page merging (KSM) is not in this kernel"
            } else {
                "guest memory: madvise MADV_MERGEABLE"
            };
            return Err(io(what)(e));
        }
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: r.start_addr().raw_value(),
            memory_size: r.len(),
            userspace_addr: r.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which outlives the VM's vCPUs
        // (they are joined before `mem` is dropped).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| Error::Kvm("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    Ok(mem)
}
