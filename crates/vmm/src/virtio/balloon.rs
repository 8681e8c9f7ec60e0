//! virtio-balloon (virtio 1.2 section 5.5): memory a guest gives back to the host.
//!
//! - Inflate: the host sets a target (`num_pages` in the configuration space, raised with a
//!   configuration interrupt); the driver takes that many pages from its allocator and lists
//!   their frame numbers on the inflate queue; the VMM drops them (MADV_DONTNEED), so they
//!   cost the host nothing until the guest touches them again. Deflate: the driver lists the
//!   frames it takes back; without VIRTIO_BALLOON_F_MUST_TELL_HOST (not offered) it may use
//!   them before saying so, and a dropped page comes back zeroed on first touch.
//! - Deflate on OOM (offered when asked): the guest deflates by itself rather than kill a
//!   process when it runs out.
//! - Statistics: the driver keeps one buffer of (tag, value) pairs on the statistics queue;
//!   the device holds it and hands it back when it wants fresh figures (on request, or every
//!   `stats` seconds), and the driver refills it.
//! - Free page reporting (VIRTIO_BALLOON_F_PAGE_REPORTING): the guest lists ranges of free
//!   pages on the reporting queue and the VMM drops them, so an idle guest's freed memory
//!   returns to the host without a target. The VMM gives a Linux guest a block size that
//!   suits its memory (`reporting_order`).
//!
//! Frame numbers are of 4 KiB pages whatever the guest's page size; ranges are dropped in
//! whole host pages (rounded inward). A frame or range outside guest memory, a list that is
//! not whole 32-bit frame numbers, a report that is not page-aligned: the device fails
//! (DEVICE_NEEDS_RESET), the VMM goes on.

use std::time::Instant;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::{Device, Fault, F_VERSION_1};

pub const F_STATS_VQ: u64 = 1 << 1;
pub const F_DEFLATE_ON_OOM: u64 = 1 << 2;
pub const F_REPORTING: u64 = 1 << 5;
/// The balloon's page: frame numbers are of 4 KiB pages (VIRTIO_BALLOON_PFN_SHIFT).
const PFN_SHIFT: u64 = 12;
/// Pages per MiB.
const PAGES_PER_MIB: u64 = 1 << (20 - PFN_SHIFT);
const QUEUE_SIZE: u16 = 256;
/// The statistics' tags (virtio 1.2, 5.5.6.3), in order.
pub const STAT_NAMES: [&str; 10] = [
    "swap_in",
    "swap_out",
    "major_faults",
    "minor_faults",
    "free_memory",
    "total_memory",
    "available_memory",
    "disk_caches",
    "hugetlb_allocations",
    "hugetlb_failures",
];

/// The Linux guest's parameter for the size of the free blocks it reports (2^order pages).
pub const REPORTING_ORDER_PARAM: &str = "page_reporting.page_reporting_order";

/// The reporting order for a guest of `mem_bytes`. Linux reports a zone only while its free
/// memory exceeds its low watermark by 32 blocks of that order, and defaults to 2 MiB blocks
/// (order 9): 64 MiB, more than a small guest ever has free, so a 128 MiB guest would never
/// report. Here the 32 blocks make at most a sixteenth of guest memory (order 6, 256 KiB
/// blocks, at 128 MiB; order 9 from 2 GiB up).
pub fn reporting_order(mem_bytes: u64) -> u32 {
    let pages = mem_bytes >> PFN_SHIFT;
    let blocks = (pages / 16 / 32).max(1);
    (63 - blocks.leading_zeros()).min(9)
}

/// How a balloon is given to the VM (`--balloon`): `size=MIB` (the first target, 0 by
/// default), `deflate-on-oom`, `reporting`, `stats=SECS` (refresh the statistics every SECS
/// seconds; 0, the default: only when asked), or `on` for none of these.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BalloonSpec {
    pub size_mib: u64,
    pub deflate_on_oom: bool,
    pub reporting: bool,
    pub stats_secs: u32,
}

impl std::str::FromStr for BalloonSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut b = BalloonSpec::default();
        for part in s.split(',') {
            match part.split_once('=') {
                None if part == "on" => {}
                None if part == "deflate-on-oom" => b.deflate_on_oom = true,
                None if part == "reporting" => b.reporting = true,
                Some(("size", v)) => {
                    b.size_mib = v
                        .trim_end_matches(['M', 'm'])
                        .parse()
                        .map_err(|_| format!("balloon: size={v} is not a number of MiB"))?
                }
                Some(("stats", v)) => {
                    b.stats_secs = v
                        .parse()
                        .map_err(|_| format!("balloon: stats={v} is not a number of seconds"))?
                }
                _ => {
                    return Err(format!(
                        "balloon: {part:?} is not size=MIB, deflate-on-oom, reporting, stats=SECS or on"
                    ))
                }
            }
        }
        Ok(b)
    }
}

impl std::fmt::Display for BalloonSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = vec![format!("size={}", self.size_mib)];
        if self.deflate_on_oom {
            parts.push("deflate-on-oom".into());
        }
        if self.reporting {
            parts.push("reporting".into());
        }
        if self.stats_secs > 0 {
            parts.push(format!("stats={}", self.stats_secs));
        }
        write!(f, "{}", parts.join(","))
    }
}

/// What a queue is for, once the features are known (a queue exists only with its feature,
/// and the driver numbers the ones that exist in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Inflate,
    Deflate,
    Stats,
    Reporting,
}

/// What the balloon has done and last heard, for the control interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// The guest's memory, in MiB.
    pub guest_mib: u64,
    /// The target, in MiB.
    pub target_mib: u64,
    /// What the driver says it holds, in MiB.
    pub actual_mib: u64,
    /// Pages inflated less pages deflated since the driver started.
    pub inflated_pages: u64,
    /// Bytes the guest reported free (and the host dropped), all told.
    pub reported_bytes: u64,
    /// Ranges reported.
    pub reports: u64,
    /// The guest's last statistics, by tag (`STAT_NAMES`), with when they came.
    pub stats: Vec<(&'static str, u64)>,
    pub stats_at: Option<Instant>,
    /// Increased each time statistics come.
    pub stats_generation: u64,
    /// Why the device failed, if the driver broke the rules (it works again after a reset).
    pub fault: Option<String>,
}

pub struct Balloon {
    spec: BalloonSpec,
    mem_bytes: u64,
    config: [u8; 16],
    roles: Vec<Role>,
    /// The statistics buffer the device holds (its chain's head), to hand back for a refresh.
    stats_head: Option<u16>,
    figures: Figures,
    host_page: u64,
}

impl Balloon {
    /// A balloon for a guest of `mem_bytes`, at the spec's first target.
    pub fn new(spec: &BalloonSpec, mem_bytes: u64) -> Result<Balloon, String> {
        // SAFETY: sysconf only reads a system value.
        let host_page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        let mut b = Balloon {
            spec: spec.clone(),
            mem_bytes,
            config: [0; 16],
            roles: Vec::new(),
            stats_head: None,
            figures: Figures::default(),
            host_page,
        };
        b.set_target(spec.size_mib)?;
        Ok(b)
    }

    /// Seconds between statistics refreshes (0: only when asked).
    pub fn stats_secs(&self) -> u32 {
        self.spec.stats_secs
    }

    /// Ask the driver to hold `mib` MiB (at most the guest's memory). The caller raises the
    /// configuration interrupt.
    pub fn set_target(&mut self, mib: u64) -> Result<(), String> {
        if mib.saturating_mul(1 << 20) > self.mem_bytes {
            return Err(format!(
                "balloon: {mib} MiB is more than the guest's {} MiB",
                self.mem_bytes >> 20
            ));
        }
        self.figures.target_mib = mib;
        let pages = (mib * PAGES_PER_MIB) as u32;
        self.config[0..4].copy_from_slice(&pages.to_le_bytes());
        Ok(())
    }

    pub fn figures(&self) -> Figures {
        let actual = u32::from_le_bytes(self.config[4..8].try_into().unwrap_or_default());
        Figures {
            guest_mib: self.mem_bytes >> 20,
            actual_mib: u64::from(actual) / PAGES_PER_MIB,
            ..self.figures.clone()
        }
    }

    fn queue(&self, role: Role) -> Option<usize> {
        self.roles.iter().position(|&r| r == role)
    }

    /// Hand the held statistics buffer back, so the driver refills it. Returns whether a
    /// buffer was used (the guest needs an interrupt).
    pub fn request_stats(
        &mut self,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, Fault> {
        let (Some(q), Some(head)) = (self.queue(Role::Stats), self.stats_head) else {
            return Ok(false);
        };
        let q = queues
            .get_mut(q)
            .ok_or_else(|| Fault("balloon: no statistics queue".into()))?;
        self.stats_head = None;
        q.add_used(mem, head, 0)
            .map_err(|e| Fault(format!("balloon: statistics: used ring: {e}")))?;
        Ok(true)
    }

    /// Drop `len` bytes of guest memory at `addr` (whole host pages of it).
    fn discard(&self, mem: &GuestMemoryMmap, addr: u64, len: u64) -> Result<(), Fault> {
        let bad = || {
            Fault(format!(
                "balloon: {len:#x} bytes at {addr:#x} are not guest memory"
            ))
        };
        let end = addr.checked_add(len).ok_or_else(bad)?;
        let region = mem.find_region(GuestAddress(addr)).ok_or_else(bad)?;
        let start = region.start_addr().0;
        if len == 0 || end > start + region.len() {
            return Err(bad());
        }
        let first = addr.next_multiple_of(self.host_page);
        let last = end - end % self.host_page;
        if first >= last {
            return Ok(());
        }
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(first - start))
            .map_err(|_| bad())?;
        // SAFETY: [host, host + last - first) lies inside the region's live mapping (checked
        // above); MADV_DONTNEED on private anonymous memory only drops the pages, which the
        // guest has given up and gets back zeroed if it touches them again.
        if unsafe { libc::madvise(host.cast(), (last - first) as usize, libc::MADV_DONTNEED) } < 0 {
            return Err(Fault(format!(
                "balloon: dropping {len:#x} bytes at {addr:#x}: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// The frame numbers of an inflate or deflate buffer, in runs of consecutive frames.
    fn frames(
        chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
        mem: &GuestMemoryMmap,
    ) -> Result<Vec<(u64, u64)>, Fault> {
        use std::io::Read;
        let mut r = chain
            .reader(mem)
            .map_err(|e| Fault(format!("balloon: frame list: {e}")))?;
        let n = r.available_bytes();
        if n % 4 != 0 {
            return Err(Fault(format!(
                "balloon: a frame list of {n} bytes is not whole 32-bit frame numbers"
            )));
        }
        let mut bytes = vec![0u8; n];
        r.read_exact(&mut bytes)
            .map_err(|e| Fault(format!("balloon: frame list: {e}")))?;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for b in bytes.chunks_exact(4) {
            let pfn = u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            match runs.last_mut() {
                Some((start, count)) if *start + *count == pfn => *count += 1,
                _ => runs.push((pfn, 1)),
            }
        }
        Ok(runs)
    }

    fn inflate_or_deflate(
        &mut self,
        q: &mut Queue,
        mem: &GuestMemoryMmap,
        inflate: bool,
    ) -> Result<bool, Fault> {
        let mut pages = 0u64;
        let used = super::drain(q, mem, "balloon", |chain| {
            for (pfn, count) in Self::frames(chain, mem)? {
                let (addr, len) = (pfn << PFN_SHIFT, count << PFN_SHIFT);
                if inflate {
                    self.discard(mem, addr, len)?;
                } else if !(mem.address_in_range(GuestAddress(addr))
                    && mem.address_in_range(GuestAddress(addr + len - 1)))
                {
                    return Err(Fault(format!(
                        "balloon: deflated frames at {addr:#x} are not guest memory"
                    )));
                }
                pages += count;
            }
            Ok(0)
        })?;
        let f = &mut self.figures.inflated_pages;
        *f = if inflate {
            f.saturating_add(pages)
        } else {
            f.saturating_sub(pages)
        };
        Ok(used)
    }

    fn report(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, Fault> {
        let mut got = (0u64, 0u64);
        let used = super::drain(q, mem, "balloon", |chain| {
            for d in chain {
                let (addr, len) = (d.addr().0, u64::from(d.len()));
                if addr % (1 << PFN_SHIFT) != 0 || len % (1 << PFN_SHIFT) != 0 {
                    return Err(Fault(format!(
                        "balloon: a reported range ({len:#x} bytes at {addr:#x}) is not whole pages"
                    )));
                }
                self.discard(mem, addr, len)?;
                got.0 += len;
                got.1 += 1;
            }
            Ok(0)
        })?;
        self.figures.reported_bytes += got.0;
        self.figures.reports += got.1;
        Ok(used)
    }

    fn stats(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, Fault> {
        use std::io::Read;
        let mut used = false;
        loop {
            let chain = q
                .iter(mem)
                .map_err(|e| Fault(format!("balloon: statistics: available ring: {e}")))?
                .next();
            let Some(chain) = chain else {
                return Ok(used);
            };
            // One buffer is held at a time: an older one goes back first.
            if let Some(old) = self.stats_head.replace(chain.head_index()) {
                q.add_used(mem, old, 0)
                    .map_err(|e| Fault(format!("balloon: statistics: used ring: {e}")))?;
                used = true;
            }
            let mut r = chain
                .reader(mem)
                .map_err(|e| Fault(format!("balloon: statistics: {e}")))?;
            let mut bytes = vec![0u8; r.available_bytes().min(64 * 10)];
            r.read_exact(&mut bytes)
                .map_err(|e| Fault(format!("balloon: statistics: {e}")))?;
            let mut stats = Vec::new();
            // Each: a 16-bit tag and a 64-bit value, packed, little-endian.
            for s in bytes.chunks_exact(10) {
                let tag = u16::from_le_bytes([s[0], s[1]]);
                let v = u64::from_le_bytes(s[2..10].try_into().unwrap_or_default());
                if let Some(name) = STAT_NAMES.get(usize::from(tag)) {
                    stats.retain(|(n, _)| n != name);
                    stats.push((*name, v));
                }
            }
            self.figures.stats = stats;
            self.figures.stats_at = Some(Instant::now());
            self.figures.stats_generation += 1;
        }
    }
}

impl Device for Balloon {
    fn device_type(&self) -> u32 {
        5
    }
    fn features(&self) -> u64 {
        F_VERSION_1
            | F_STATS_VQ
            | if self.spec.deflate_on_oom {
                F_DEFLATE_ON_OOM
            } else {
                0
            }
            | if self.spec.reporting { F_REPORTING } else { 0 }
    }
    fn queue_max_sizes(&self) -> &[u16] {
        if self.spec.reporting {
            &[QUEUE_SIZE; 4]
        } else {
            &[QUEUE_SIZE; 3]
        }
    }
    fn config(&self) -> &[u8] {
        &self.config
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` (bytes 4..8) is the driver's to write.
        if offset == 4 && data.len() == 4 {
            self.config[4..8].copy_from_slice(data);
        }
    }
    fn ack_features(&mut self, features: u64) {
        self.roles = vec![Role::Inflate, Role::Deflate];
        if features & F_STATS_VQ != 0 {
            self.roles.push(Role::Stats);
        }
        if features & F_REPORTING != 0 {
            self.roles.push(Role::Reporting);
        }
    }
    fn process(
        &mut self,
        q: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, Fault> {
        let Some(queue) = queues.get_mut(q) else {
            return Ok(false);
        };
        match self.roles.get(q) {
            Some(Role::Inflate) => self.inflate_or_deflate(queue, mem, true),
            Some(Role::Deflate) => self.inflate_or_deflate(queue, mem, false),
            Some(Role::Stats) => self.stats(queue, mem),
            Some(Role::Reporting) => self.report(queue, mem),
            None => Err(Fault(format!(
                "balloon: queue {q} notified, which the negotiated features do not have"
            ))),
        }
    }
    fn reset(&mut self) {
        self.roles.clear();
        self.stats_head = None;
        self.config[4..].fill(0);
        let target = self.figures.target_mib;
        self.figures = Figures {
            target_mib: target,
            ..Figures::default()
        };
    }
    fn as_balloon(&mut self) -> Option<&mut Balloon> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balloon_specs_parse_and_print() {
        assert_eq!("on".parse::<BalloonSpec>().unwrap(), BalloonSpec::default());
        let b: BalloonSpec = "size=64,deflate-on-oom,reporting,stats=2".parse().unwrap();
        assert_eq!(
            b,
            BalloonSpec {
                size_mib: 64,
                deflate_on_oom: true,
                reporting: true,
                stats_secs: 2
            }
        );
        assert_eq!(b.to_string().parse::<BalloonSpec>().unwrap(), b);
        for bad in ["", "size=x", "stats=-1", "reporting=1", "hint"] {
            assert!(bad.parse::<BalloonSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn small_guests_report_smaller_blocks() {
        assert_eq!(reporting_order(128 << 20), 6);
        assert_eq!(reporting_order(256 << 20), 7);
        assert_eq!(reporting_order(2 << 30), 9);
        assert_eq!(reporting_order(64 << 30), 9);
        assert_eq!(reporting_order(4 << 20), 1);
        assert_eq!(reporting_order(1 << 20), 0);
    }

    #[test]
    fn a_target_past_the_guest_is_refused() {
        let mut b = Balloon::new(&BalloonSpec::default(), 128 << 20).unwrap();
        assert!(b.set_target(128).is_ok());
        let e = b.set_target(129).unwrap_err();
        assert_eq!(e, "balloon: 129 MiB is more than the guest's 128 MiB");
        assert_eq!(b.figures().target_mib, 128);
        assert_eq!(&b.config()[0..4], &(128u32 * 256).to_le_bytes());
    }
}

#[cfg(test)]
mod driver_tests {
    use super::*;
    use crate::virtio::mmio::{Transport, NEEDS_RESET};
    use vm_memory::Bytes;
    use vmm_sys_util::eventfd::EventFd;

    const MEM: u64 = 0x40000;

    /// A balloon with all its features, set up as Linux's driver sets it up: queue i's
    /// descriptors at 0x1000 + i * 0x400 (avail +0x100, used +0x200), 8 entries.
    fn device() -> (Transport, GuestMemoryMmap) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        let spec = BalloonSpec {
            size_mib: 0,
            deflate_on_oom: true,
            reporting: true,
            stats_secs: 0,
        };
        let b = Balloon::new(&spec, 128 << 20).unwrap();
        let mut t = Transport::new(Box::new(b), EventFd::new(libc::EFD_NONBLOCK).unwrap()).unwrap();
        let lo = (F_STATS_VQ | F_DEFLATE_ON_OOM | F_REPORTING) as u32;
        let w = |t: &mut Transport, reg: u64, v: u32| t.write(reg, &v.to_le_bytes());
        for (reg, v) in crate::virtio::mmio::negotiation(lo) {
            w(&mut t, reg, v);
        }
        for q in 0..4u32 {
            let base = 0x1000 + q * 0x400;
            for (reg, v) in [
                (0x30, q),
                (0x38, 8),
                (0x80, base),
                (0x90, base + 0x100),
                (0xa0, base + 0x200),
                (0x44, 1),
            ] {
                w(&mut t, reg, v);
            }
        }
        w(&mut t, 0x70, 0xf);
        (t, mem)
    }

    /// Make descriptor chain `bufs` (address, length, device-writable) available on queue q.
    fn offer(mem: &GuestMemoryMmap, q: u64, bufs: &[(u64, u32, bool)]) {
        let base = 0x1000 + q * 0x400;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let at = GuestAddress(base + 16 * i as u64);
            let next = i + 1 < bufs.len();
            let flags = u16::from(next) | if write { 2 } else { 0 };
            mem.write_obj(addr, at).unwrap();
            mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
            mem.write_obj((i + 1) as u16, GuestAddress(at.0 + 14))
                .unwrap();
        }
        let idx: u16 = mem.read_obj(GuestAddress(base + 0x102)).unwrap();
        mem.write_obj(0u16, GuestAddress(base + 0x104 + 2 * u64::from(idx % 8)))
            .unwrap();
        mem.write_obj(idx.wrapping_add(1), GuestAddress(base + 0x102))
            .unwrap();
    }

    fn used(mem: &GuestMemoryMmap, q: u64) -> u16 {
        mem.read_obj(GuestAddress(0x1000 + q * 0x400 + 0x202))
            .unwrap()
    }

    fn page_is_zero(mem: &GuestMemoryMmap, pfn: u64) -> bool {
        let mut b = vec![0u8; 4096];
        mem.read_slice(&mut b, GuestAddress(pfn << 12)).unwrap();
        b.iter().all(|&x| x == 0)
    }

    #[test]
    fn inflated_and_reported_pages_are_dropped_and_counted() {
        let (mut t, mem) = device();
        for pfn in 0x10..0x40 {
            mem.write_slice(&[0xaa; 4096], GuestAddress(pfn << 12))
                .unwrap();
        }
        // Inflate frames 0x10, 0x11 (one run) and 0x20.
        for (i, pfn) in [0x10u32, 0x11, 0x20].iter().enumerate() {
            mem.write_obj(*pfn, GuestAddress(0x8000 + 4 * i as u64))
                .unwrap();
        }
        offer(&mem, 0, &[(0x8000, 12, false)]);
        t.notify(0, &mem);
        assert!(t.fault().is_none(), "{:?}", t.fault());
        assert_eq!(used(&mem, 0), 1);
        assert!(page_is_zero(&mem, 0x10) && page_is_zero(&mem, 0x11) && page_is_zero(&mem, 0x20));
        assert!(
            !page_is_zero(&mem, 0x12),
            "a page not in the list was dropped"
        );
        // Deflate one: counted, the page stays as it is (zero until the guest writes it).
        mem.write_obj(0x20u32, GuestAddress(0x9000)).unwrap();
        offer(&mem, 1, &[(0x9000, 4, false)]);
        t.notify(1, &mem);
        // Report 0x30..0x38 (32 KiB), as Linux does: a device-writable buffer.
        offer(&mem, 3, &[(0x30 << 12, 0x8000, true)]);
        t.notify(3, &mem);
        assert!(t.fault().is_none(), "{:?}", t.fault());
        assert!((0x30..0x38).all(|p| page_is_zero(&mem, p)));
        assert!(!page_is_zero(&mem, 0x38));
        // The driver says it holds 2 pages.
        t.write(0x104, &2u32.to_le_bytes());
        let f = t.balloon().unwrap().figures();
        assert_eq!(
            (f.inflated_pages, f.reported_bytes, f.reports),
            (2, 0x8000, 1)
        );
        assert_eq!(f.actual_mib, 0);
    }

    #[test]
    fn statistics_are_held_and_handed_back_for_a_refresh() {
        let (mut t, mem) = device();
        let mut stats = Vec::new();
        for (tag, v) in [(4u16, 100u64 << 20), (5, 128 << 20), (99, 7)] {
            stats.extend_from_slice(&tag.to_le_bytes());
            stats.extend_from_slice(&v.to_le_bytes());
        }
        mem.write_slice(&stats, GuestAddress(0xa000)).unwrap();
        offer(&mem, 2, &[(0xa000, stats.len() as u32, false)]);
        t.notify(2, &mem);
        assert_eq!(used(&mem, 2), 0, "the buffer is held");
        let f = t.balloon().unwrap().figures();
        assert_eq!(
            f.stats,
            [("free_memory", 100 << 20), ("total_memory", 128 << 20)]
        );
        assert_eq!(f.stats_generation, 1);
        t.request_balloon_stats(&mem);
        assert_eq!(used(&mem, 2), 1, "handed back for a refresh");
        t.request_balloon_stats(&mem);
        assert_eq!(used(&mem, 2), 1, "nothing held, nothing handed back");
    }

    #[test]
    fn a_hostile_driver_fails_the_device_only() {
        for (q, bufs, frames, why) in [
            (
                0,
                vec![(0x8000, 4, false)],
                vec![(MEM >> 12) as u32],
                "not guest memory",
            ),
            (0, vec![(0x8000, 6, false)], vec![1, 2], "not whole 32-bit"),
            (
                1,
                vec![(0x8000, 4, false)],
                vec![u32::MAX],
                "not guest memory",
            ),
            (3, vec![(0x3000, 0x800, true)], vec![], "not whole pages"),
            (
                3,
                vec![(MEM - 0x1000, 0x2000, true)],
                vec![],
                "not guest memory",
            ),
        ] {
            let (mut t, mem) = device();
            for (i, f) in frames.iter().enumerate() {
                mem.write_obj(*f, GuestAddress(0x8000 + 4 * i as u64))
                    .unwrap();
            }
            offer(&mem, q, &bufs);
            t.notify(q as usize, &mem);
            let fault = t.fault().map(|f| f.0.clone()).unwrap_or_default();
            assert!(fault.contains(why), "queue {q}: {fault:?}");
            assert!(t.status() & NEEDS_RESET != 0);
        }
    }
}
