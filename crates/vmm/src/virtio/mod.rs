//! Paravirtual devices on virtio-mmio (virtio 1.x, transport version 2): the transport's
//! registers (`mmio`) and the devices behind them (`block`, `net`, `vsock`, `balloon`). The guest finds each device from
//! `virtio_mmio.device=4K@ADDR:IRQ` on its command line.
//!
//! The vCPU thread that touches a device's registers only updates its state; the queues are
//! worked on by the VMM's main thread, woken by an ioeventfd that KVM signals when the guest
//! writes QueueNotify, and the guest is interrupted through an irqfd. A driver that breaks the
//! rules — a descriptor outside guest memory, a chain that loops, a request that does not parse
//! — gets its device failed (status DEVICE_NEEDS_RESET, no more work until the driver resets
//! it); the VMM and the other devices go on.

pub mod balloon;
pub mod block;
pub mod fuzz;
pub mod mmio;
pub mod net;
pub mod vsock;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::{io, Config, Error};

/// Feature bit: the device follows virtio 1.x (mandatory for the version-2 transport).
pub const F_VERSION_1: u64 = 1 << 32;

/// Why a device stopped working for its driver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Fault(pub String);

/// What a device does with its queues.
pub trait Device: Send {
    /// The virtio device ID (2: block, 1: net, 19: vsock, 5: balloon).
    fn device_type(&self) -> u32;
    /// The features offered (F_VERSION_1 included).
    fn features(&self) -> u64;
    /// The largest size of each queue.
    fn queue_max_sizes(&self) -> &[u16];
    /// Bytes of the device's configuration space.
    fn config(&self) -> &[u8];
    /// Work on what the driver made available on queue `q`. Returns whether any buffer was
    /// used (the driver may need an interrupt); a `Fault` fails the device.
    fn process(
        &mut self,
        q: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, Fault>;
    /// The driver wrote `data` at `offset` in the configuration space (ignored unless the
    /// device has writable fields).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver accepted `features` (FEATURES_OK stuck): which queues exist may follow.
    fn ack_features(&mut self, _features: u64) {}
    /// The driver reset the device.
    fn reset(&mut self) {}
    /// The balloon, for the control interface (which sets its target and asks for figures).
    fn as_balloon(&mut self) -> Option<&mut balloon::Balloon> {
        None
    }
    /// The directory descriptor the device removes a file through at the end (the VMM's
    /// seccomp filter allows unlinkat on it only).
    fn unlink_dir(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// The host descriptor the device waits on (a tap), watched edge-triggered by the VMM.
    fn fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// That descriptor is ready. Returns whether any buffer was used, as `process` does.
    fn event(&mut self, _queues: &mut [Queue], _mem: &GuestMemoryMmap) -> Result<bool, Fault> {
        Ok(false)
    }
}

/// Serve every chain the driver made available on `q`: `serve` returns how many bytes it
/// wrote into the chain, which then goes on the used ring. Returns whether any chain was used;
/// a broken ring or a `Fault` from `serve` fails the device (`what` names it).
pub fn drain(
    q: &mut Queue,
    mem: &GuestMemoryMmap,
    what: &str,
    mut serve: impl FnMut(virtio_queue::DescriptorChain<&GuestMemoryMmap>) -> Result<u32, Fault>,
) -> Result<bool, Fault> {
    use virtio_queue::{QueueOwnedT, QueueT};
    let mut used = false;
    loop {
        let chain = q
            .iter(mem)
            .map_err(|e| Fault(format!("{what}: available ring: {e}")))?
            .next();
        let Some(chain) = chain else {
            return Ok(used);
        };
        let head = chain.head_index();
        let len = serve(chain)?;
        q.add_used(mem, head, len)
            .map_err(|e| Fault(format!("{what}: used ring: {e}")))?;
        used = true;
    }
}

/// The virtio devices of `cfg`, each with an irqfd on its interrupt line and an ioeventfd
/// per queue on its QueueNotify register.
pub(crate) fn attach(vm: &kvm_ioctls::VmFd, cfg: &Config) -> crate::Result<Vec<mmio::Transport>> {
    let mut out = Vec::new();
    for (i, spec) in cfg.disks.iter().enumerate() {
        let disk = block::Disk::open(spec)?;
        let dev = block::Block::new(disk, &format!("cellvisor-vd{i}"));
        out.push(Box::new(dev) as Box<dyn Device>);
    }
    for (i, spec) in cfg.nets.iter().enumerate() {
        let tap = net::open_tap(spec)?;
        // A locally administered MAC, distinct per VMM process and device.
        let pid = std::process::id().to_be_bytes();
        let mac = spec
            .mac
            .unwrap_or([0x02, 0xcc, pid[1], pid[2], pid[3], i as u8]);
        out.push(Box::new(net::Net::new(tap, mac)));
    }
    if let Some(spec) = &cfg.vsock {
        out.push(Box::new(vsock::Vsock::new(spec)?));
    }
    if let Some(spec) = &cfg.balloon {
        let b = balloon::Balloon::new(spec, cfg.mem_bytes).map_err(Error::Config)?;
        out.push(Box::new(b));
    }
    let mut devices = Vec::new();
    for (i, dev) in out.into_iter().enumerate() {
        let (base, line) = crate::boot::device_window(i);
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
        vm.register_irqfd(&irq, line)
            .map_err(|e| Error::Kvm("KVM_IRQFD", e))?;
        let t = mmio::Transport::new(dev, irq).map_err(io("virtio device"))?;
        for q in 0..t.queue_count() {
            vm.register_ioevent(
                t.notify_evt(q),
                &kvm_ioctls::IoEventAddress::Mmio(base + mmio::QUEUE_NOTIFY),
                q as u32,
            )
            .map_err(|e| Error::Kvm("KVM_IOEVENTFD", e))?;
        }
        devices.push(t);
    }
    Ok(devices)
}
