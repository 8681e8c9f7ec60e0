//! The virtio-mmio transport, version 2 (virtio 1.2 section 4.2.2): one 4 KiB window of
//! registers per device, then its configuration space at 0x100.

use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{Device, Fault, F_VERSION_1};

/// Bytes of guest physical address space per device.
pub const WINDOW: u64 = 0x1000;
/// The register QueueNotify, which KVM turns into an ioeventfd signal.
pub const QUEUE_NOTIFY: u64 = 0x50;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VENDOR: u32 = 0x4c56_4543; // "CEVL"

/// The register writes of a driver that acknowledges the device and accepts VERSION_1 alone,
/// up to FEATURES_OK (for the test and fuzz drivers).
pub const NEGOTIATE_VERSION_1: [(u64, u32); 6] = [
    (0x70, ACKNOWLEDGE | DRIVER),
    (0x24, 1),
    (0x20, 1),
    (0x24, 0),
    (0x20, 0),
    (0x70, ACKNOWLEDGE | DRIVER | FEATURES_OK),
];

/// The register writes of a driver that acknowledges the device and accepts VERSION_1 and
/// the low feature bits `lo`, up to FEATURES_OK (for the test and fuzz drivers).
pub fn negotiation(lo: u32) -> [(u64, u32); 6] {
    [
        (0x70, ACKNOWLEDGE | DRIVER),
        (0x24, 0),
        (0x20, lo),
        (0x24, 1),
        (0x20, 1),
        (0x70, ACKNOWLEDGE | DRIVER | FEATURES_OK),
    ]
}

/// Device status bits.
pub const ACKNOWLEDGE: u32 = 1;
pub const DRIVER: u32 = 2;
pub const DRIVER_OK: u32 = 4;
pub const FEATURES_OK: u32 = 8;
pub const NEEDS_RESET: u32 = 0x40;
pub const FAILED: u32 = 0x80;

/// Interrupt status bits.
const INT_USED: u32 = 1;
const INT_CONFIG: u32 = 2;

/// One device behind its registers.
pub struct Transport {
    dev: Box<dyn Device>,
    queues: Vec<Queue>,
    queue_sel: u32,
    dev_features_sel: u32,
    drv_features_sel: u32,
    drv_features: u64,
    status: u32,
    interrupt_status: AtomicU32,
    config_generation: u32,
    irq: EventFd,
    /// One per queue: signalled when the guest writes QueueNotify (by KVM through an
    /// ioeventfd, or by `write` for a notify KVM did not catch).
    notify: Vec<EventFd>,
    /// Why the device failed, if it did (kept until the driver resets it).
    fault: Option<Fault>,
}

impl Transport {
    pub fn new(dev: Box<dyn Device>, irq: EventFd) -> std::io::Result<Self> {
        let queues = dev
            .queue_max_sizes()
            .iter()
            .map(|&n| Queue::new(n))
            .collect::<Result<_, _>>()
            .map_err(|e| std::io::Error::other(format!("virtio queue: {e}")))?;
        let notify = (0..dev.queue_max_sizes().len())
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<std::io::Result<_>>()?;
        Ok(Transport {
            dev,
            queues,
            queue_sel: 0,
            dev_features_sel: 0,
            drv_features_sel: 0,
            drv_features: 0,
            status: 0,
            interrupt_status: AtomicU32::new(0),
            config_generation: 0,
            irq,
            notify,
            fault: None,
        })
    }

    /// Queue `q`'s notification eventfd (for KVM's ioeventfd and the device loop).
    pub fn notify_evt(&self, q: usize) -> &EventFd {
        &self.notify[q]
    }

    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    pub fn fault(&self) -> Option<&Fault> {
        self.fault.as_ref()
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// A 32-bit register read by the guest (other widths only in the config space).
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            let cfg = self.dev.config();
            for (i, b) in data.iter_mut().enumerate() {
                *b = cfg.get(offset as usize - 0x100 + i).copied().unwrap_or(0);
            }
            return;
        }
        let q = self.queues.get(self.queue_sel as usize);
        let v = match offset {
            0x00 => MAGIC,
            0x04 => 2,
            0x08 => self.dev.device_type(),
            0x0c => VENDOR,
            0x10 => match self.dev_features_sel {
                0 => self.dev.features() as u32,
                1 => (self.dev.features() >> 32) as u32,
                _ => 0,
            },
            0x34 => q.map_or(0, |q| u32::from(q.max_size())),
            0x44 => q.map_or(0, |q| u32::from(q.ready())),
            0x60 => self.interrupt_status.load(Ordering::SeqCst),
            0x70 => self.status,
            0xfc => self.config_generation,
            _ => 0,
        };
        if data.len() == 4 {
            data.copy_from_slice(&v.to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    /// A register write by the guest. A QueueNotify that reaches here (KVM's ioeventfd did
    /// not catch it: another width) signals the queue's eventfd as KVM would.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= 0x100 {
            self.dev.write_config(offset - 0x100, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let v = u32::from_le_bytes(bytes);
        // Queue and feature registers only count before DRIVER_OK (virtio 1.2, 4.2.2.2).
        let setting_up = self.status & DRIVER_OK == 0;
        match offset {
            0x14 => self.dev_features_sel = v,
            0x20 if setting_up && self.status & FEATURES_OK == 0 => match self.drv_features_sel {
                0 => self.drv_features = (self.drv_features & !0xffff_ffff) | u64::from(v),
                1 => self.drv_features = (self.drv_features & 0xffff_ffff) | (u64::from(v) << 32),
                _ => {}
            },
            0x24 => self.drv_features_sel = v,
            0x30 => self.queue_sel = v,
            0x38 if setting_up => {
                if let Some(q) = self.selected() {
                    q.set_size(v as u16);
                }
            }
            0x44 if setting_up => {
                if let Some(q) = self.selected() {
                    q.set_ready(v == 1);
                }
            }
            QUEUE_NOTIFY => {
                if let Some(e) = self.notify.get(v as usize) {
                    let _ = e.write(1);
                }
            }
            0x64 => {
                self.interrupt_status.fetch_and(!v, Ordering::SeqCst);
            }
            0x70 => self.set_status(v),
            0x80 | 0x84 | 0x90 | 0x94 | 0xa0 | 0xa4 if setting_up => {
                let (lo, hi) = if offset & 4 == 0 {
                    (Some(v), None)
                } else {
                    (None, Some(v))
                };
                if let Some(q) = self.selected() {
                    match offset & !4 {
                        0x80 => q.set_desc_table_address(lo, hi),
                        0x90 => q.set_avail_ring_address(lo, hi),
                        _ => q.set_used_ring_address(lo, hi),
                    }
                }
            }
            _ => {}
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        // FEATURES_OK only sticks for a subset of what was offered that includes VERSION_1.
        if v & FEATURES_OK != 0 && self.status & FEATURES_OK == 0 {
            let offered = self.dev.features();
            if self.drv_features & !offered != 0 || self.drv_features & F_VERSION_1 == 0 {
                self.status = (v & !FEATURES_OK) | (self.status & NEEDS_RESET);
                return;
            }
        }
        if v & FEATURES_OK != 0 && self.status & FEATURES_OK == 0 {
            self.dev.ack_features(self.drv_features);
        }
        if v & DRIVER_OK != 0 && self.status & DRIVER_OK == 0 {
            // A driver may make buffers available before DRIVER_OK (Linux's balloon primes
            // its statistics queue in probe), whose notifications were not acted on: look at
            // every queue once now.
            for e in &self.notify {
                let _ = e.write(1);
            }
        }
        self.status = v | (self.status & NEEDS_RESET);
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.dev.reset();
        self.status = 0;
        self.drv_features = 0;
        self.queue_sel = 0;
        self.interrupt_status.store(0, Ordering::SeqCst);
        self.fault = None;
    }

    /// Queue `q`'s eventfd was signalled: consume it, then work on the queue.
    pub fn notified(&mut self, q: usize, mem: &GuestMemoryMmap) {
        if let Some(e) = self.notify.get(q) {
            let _ = e.read();
        }
        self.notify(q, mem);
    }

    /// The guest notified queue `q`: work on it, interrupt the guest if it should know.
    pub fn notify(&mut self, q: usize, mem: &GuestMemoryMmap) {
        if self.status & DRIVER_OK == 0 || self.fault.is_some() || q >= self.queues.len() {
            return;
        }
        if !self.queues[q].ready() || !self.queues[q].is_valid(mem) {
            self.fail(Fault(format!("queue {q} notified but not valid")));
            return;
        }
        let r = self.dev.process(q, &mut self.queues, mem);
        self.done(r);
    }

    /// The balloon behind these registers, if it is one.
    pub fn balloon(&mut self) -> Option<&mut super::balloon::Balloon> {
        self.dev.as_balloon()
    }

    /// The balloon's figures, with the device's failure if it failed.
    pub fn balloon_figures(&mut self) -> Option<super::balloon::Figures> {
        let fault = self.fault.as_ref().map(|f| f.0.clone());
        let mut f = self.dev.as_balloon()?.figures();
        f.fault = fault;
        Some(f)
    }

    /// The device changed its configuration (a balloon's target): tell a running driver.
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & DRIVER_OK != 0 {
            self.interrupt(INT_CONFIG);
        }
    }

    /// Ask the balloon's driver for fresh statistics (its held buffer handed back).
    pub fn request_balloon_stats(&mut self, mem: &GuestMemoryMmap) {
        if self.status & DRIVER_OK == 0 || self.fault.is_some() {
            return;
        }
        let r = match self.dev.as_balloon() {
            Some(b) => b.request_stats(&mut self.queues, mem),
            None => Ok(false),
        };
        self.done(r);
    }

    /// The device's host descriptor is ready (a tap has frames).
    pub fn event(&mut self, mem: &GuestMemoryMmap) {
        if self.status & DRIVER_OK == 0 || self.fault.is_some() {
            return;
        }
        let r = self.dev.event(&mut self.queues, mem);
        self.done(r);
    }

    /// After the device worked: interrupt the guest if buffers were used, or fail the device.
    fn done(&mut self, r: Result<bool, Fault>) {
        match r {
            Ok(false) => {}
            // Always interrupt: work on one queue may have used another's buffers (vsock
            // answers on RX what came on TX), and a spare interrupt is harmless.
            Ok(true) => self.interrupt(INT_USED),
            Err(f) => self.fail(f),
        }
    }

    pub fn fd(&self) -> Option<std::os::fd::RawFd> {
        self.dev.fd()
    }

    pub fn unlink_dir(&self) -> Option<std::os::fd::RawFd> {
        self.dev.unlink_dir()
    }

    /// The driver broke the rules: the device needs a reset before it works again.
    fn fail(&mut self, f: Fault) {
        self.fault = Some(f);
        self.status |= NEEDS_RESET;
        self.config_generation = self.config_generation.wrapping_add(1);
        self.interrupt(INT_CONFIG);
    }

    fn interrupt(&self, why: u32) {
        self.interrupt_status.fetch_or(why, Ordering::SeqCst);
        let _ = self.irq.write(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that fails whatever it is given.
    struct Broken;
    impl Device for Broken {
        fn device_type(&self) -> u32 {
            2
        }
        fn features(&self) -> u64 {
            F_VERSION_1
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[8]
        }
        fn config(&self) -> &[u8] {
            &[]
        }
        fn process(
            &mut self,
            _: usize,
            _: &mut [Queue],
            _: &GuestMemoryMmap,
        ) -> Result<bool, Fault> {
            Err(Fault("broken".into()))
        }
    }

    fn w(t: &mut Transport, reg: u64, v: u32) {
        t.write(reg, &v.to_le_bytes());
    }

    /// Found by cargo fuzz: a failed device must keep saying DEVICE_NEEDS_RESET until the
    /// driver resets it, whatever else the driver writes to its status.
    #[test]
    fn a_failed_device_says_so_until_reset() {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 0x10000)]).unwrap();
        let mut t =
            Transport::new(Box::new(Broken), EventFd::new(libc::EFD_NONBLOCK).unwrap()).unwrap();
        for (reg, v) in [
            (0x70, 3),
            (0x24, 1),
            (0x20, 1),
            (0x70, 0xb),
            (0x38, 8),
            (0x80, 0x1000),
            (0x90, 0x2000),
            (0xa0, 0x3000),
            (0x44, 1),
            (0x70, 0xf),
        ] {
            w(&mut t, reg, v);
        }
        t.notify(0, &mem);
        assert!(t.fault().is_some() && t.status() & NEEDS_RESET != 0);
        let mut isr = [0u8; 4];
        t.read(0x60, &mut isr);
        assert_eq!(u32::from_le_bytes(isr) & INT_CONFIG, INT_CONFIG);
        // A status write asking for FEATURES_OK with features never offered: refused, but
        // the device still needs a reset.
        w(&mut t, 0x70, 0);
        assert_eq!(t.status(), 0, "a reset clears the failure");
        assert!(t.fault().is_none());
        t.notify(0, &mem);
        w(&mut t, 0x70, 3);
        w(&mut t, 0x24, 0);
        w(&mut t, 0x20, 1 << 30);
        w(&mut t, 0x70, 0xb);
        assert_eq!(
            t.status() & FEATURES_OK,
            0,
            "features never offered are refused"
        );
        // Fail it (DRIVER_OK without FEATURES_OK still lets the queue be notified here).
        w(&mut t, 0x70, 0x7);
        t.notify(0, &mem);
        assert!(t.fault().is_some());
        for v in [0xb, 0xf, 0x3, 0x8] {
            w(&mut t, 0x70, v);
            assert!(
                t.status() & NEEDS_RESET != 0,
                "status {v:#x} cleared NEEDS_RESET"
            );
        }
    }
}
