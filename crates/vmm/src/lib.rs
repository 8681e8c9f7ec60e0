//! cellvisor's virtual machine monitor: a microVM on KVM, built from the rust-vmm crates
//! (kvm-ioctls, kvm-bindings, vm-memory, linux-loader, vm-superio, vmm-sys-util). It boots a
//! 64-bit Linux kernel (ELF vmlinux or bzImage) with an initrd and a command line, one thread
//! per vCPU, a 16550 serial console and an i8042 whose reset ends the VM.
//!
//! Guest memory is anonymous and private, mapped with MAP_NORESERVE: a page costs host memory
//! only once the guest touches it. Any exit the VMM does not handle ends that VM (and only it)
//! with the exit's data and the instruction bytes at the guest's RIP.

pub mod arch;
mod config;
pub mod devices;
pub mod seccomp;
pub mod unpack;
mod vcpu;
pub mod virtio;

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::Kvm;
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader, KernelLoaderResult};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};
use vmm_sys_util::eventfd::EventFd;

/// The cause of a boot step's failure (a loader's, guest memory's error).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong: one line saying what, with which input; the cause is the source (the
/// caller prints the chain once).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The VM's configuration asks for what cannot be.
    #[error("{0}")]
    Config(String),
    /// A KVM ioctl failed.
    #[error("{0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// The guest's layout cannot hold what it must (a table, the initrd).
    #[error("{0}")]
    Layout(String),
    /// A boot step failed: loading the kernel, writing a table into guest memory.
    #[error("{what}")]
    Boot {
        what: String,
        #[source]
        source: Cause,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Disk(#[from] virtio::block::Error),
    #[error(transparent)]
    Net(#[from] virtio::net::Error),
    #[error(transparent)]
    Vsock(#[from] virtio::vsock::Error),
}

impl Error {
    /// Boot step `what` failed because of `e`.
    pub(crate) fn boot(what: impl std::fmt::Display, e: impl Into<Cause>) -> Error {
        Error::Boot {
            what: what.to_string(),
            source: e.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub use config::{Config, Console, DEFAULT_CMDLINE};

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The guest reset the machine (i8042 or a KVM reset event): how Linux reboots and how a
    /// microVM's guest asks to stop.
    Reset,
    /// The guest powered off.
    Poweroff,
    /// A triple fault or other shutdown of a vCPU.
    Shutdown(String),
    /// An exit the VMM cannot handle, with its data and the code at RIP.
    Error(String),
    /// The VMM was told to stop (SIGTERM, SIGINT): the guest was stopped where it was.
    Stopped(i32),
}

/// What the vCPU threads share with the VM's main thread.
pub(crate) struct Shared {
    pub legacy: devices::Legacy,
    pub stop: AtomicBool,
    pub exit: Mutex<Option<Exit>>,
    /// Written when the VM must end (by a vCPU, or the i8042's reset line).
    pub exit_evt: EventFd,
    pub mem: GuestMemoryMmap,
    /// The virtio-mmio devices, one 4 KiB window each from `arch::MMIO_START`.
    pub virtio: Vec<Mutex<virtio::mmio::Transport>>,
}

impl Shared {
    /// Which virtio device (and offset in its window) an MMIO address falls on.
    pub fn mmio_device(&self, addr: u64) -> Option<(usize, u64)> {
        let off = addr.checked_sub(arch::MMIO_START)?;
        let d = (off / virtio::mmio::WINDOW) as usize;
        (d < self.virtio.len()).then_some((d, off % virtio::mmio::WINDOW))
    }

    /// End the VM for `why` (the first reason wins).
    pub fn end(&self, why: Exit) {
        let mut e = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if e.is_none() {
            *e = Some(why);
        }
        let _ = self.exit_evt.write(1);
    }
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}

/// Load the kernel: an ELF vmlinux; else a bzImage, unpacked here into the vmlinux it carries
/// when its format is one we decompress (unless `keep_bzimage`), or loaded as it is. Returns
/// the loader's result and the 64-bit entry point.
fn load_kernel(mem: &GuestMemoryMmap, cfg: &Config) -> Result<(KernelLoaderResult, u64)> {
    let mut f = File::open(&cfg.kernel).map_err(io(cfg.kernel.display()))?;
    let himem = Some(GuestAddress(arch::HIMEM));
    let elf = |r: KernelLoaderResult| {
        let entry = r.kernel_load.raw_value();
        (r, entry)
    };
    let elf_err = match Elf::load(mem, None, &mut f, himem) {
        Ok(r) => return Ok(elf(r)),
        Err(e) => e,
    };
    if !cfg.keep_bzimage {
        if let Some(vmlinux) = unpacked(&cfg.kernel, &mut f)? {
            return Elf::load(mem, None, &mut std::io::Cursor::new(vmlinux), himem)
                .map(elf)
                .map_err(|e| {
                    Error::boot(
                        format!("{}: the kernel it carries", cfg.kernel.display()),
                        e,
                    )
                });
        }
    }
    match BzImage::load(mem, None, &mut f, himem) {
        // The 64-bit entry is 0x200 past the protected-mode code.
        Ok(r) => {
            let entry = r.kernel_load.raw_value() + 0x200;
            Ok((r, entry))
        }
        Err(bz_err) => Err(Error::boot(
            format!("{}", cfg.kernel.display()),
            format!("neither an ELF kernel ({elf_err}) nor a bzImage ({bz_err})"),
        )),
    }
}

/// The vmlinux a compressed bzImage carries, when its format is one [`unpack`] knows. One
/// that fails to unpack is said on stderr and booted as it is, through its own decompressor.
/// The file is read from its start and left there.
fn unpacked(path: &std::path::Path, f: &mut File) -> Result<Option<Vec<u8>>> {
    use std::io::{Read, Seek};
    let mut image = Vec::new();
    f.rewind()
        .and_then(|_| f.read_to_end(&mut image))
        .and_then(|_| f.rewind())
        .map_err(io(path.display()))?;
    let Some((format, data, size)) = unpack::payload(&image) else {
        return Ok(None);
    };
    match unpack::unpack(format, data, size) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
            eprintln!(
                "cellvisor vm: {}: {e}{cause}; booting it through its own decompressor",
                path.display()
            );
            Ok(None)
        }
    }
}

/// The virtio devices of `cfg`, each with an irqfd on its interrupt line and an ioeventfd
/// per queue on its QueueNotify register.
fn virtio_devices(vm: &kvm_ioctls::VmFd, cfg: &Config) -> Result<Vec<virtio::mmio::Transport>> {
    let mut out = Vec::new();
    for (i, spec) in cfg.disks.iter().enumerate() {
        let disk = virtio::block::Disk::open(spec)?;
        let dev = virtio::block::Block::new(disk, &format!("cellvisor-vd{i}"));
        out.push(Box::new(dev) as Box<dyn virtio::Device>);
    }
    for (i, spec) in cfg.nets.iter().enumerate() {
        let tap = virtio::net::open_tap(spec)?;
        // A locally administered MAC, distinct per VMM process and device.
        let pid = std::process::id().to_be_bytes();
        let mac = spec
            .mac
            .unwrap_or([0x02, 0xcc, pid[1], pid[2], pid[3], i as u8]);
        out.push(Box::new(virtio::net::Net::new(tap, mac)));
    }
    if let Some(spec) = &cfg.vsock {
        out.push(Box::new(virtio::vsock::Vsock::new(spec)?));
    }
    let mut devices = Vec::new();
    for (i, dev) in out.into_iter().enumerate() {
        let base = arch::MMIO_START + i as u64 * virtio::mmio::WINDOW;
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
        vm.register_irqfd(&irq, arch::FIRST_DEVICE_IRQ + i as u32)
            .map_err(|e| Error::Kvm("KVM_IRQFD", e))?;
        let t = virtio::mmio::Transport::new(dev, irq).map_err(io("virtio device"))?;
        for q in 0..t.queue_count() {
            vm.register_ioevent(
                t.notify_evt(q),
                &kvm_ioctls::IoEventAddress::Mmio(base + virtio::mmio::QUEUE_NOTIFY),
                q as u32,
            )
            .map_err(|e| Error::Kvm("KVM_IOEVENTFD", e))?;
        }
        devices.push(t);
    }
    Ok(devices)
}

/// In an event token: a device's host descriptor, not a queue.
const HOST_FD: u64 = 0x8000;
/// The event token of console input.
const INPUT: u64 = u64::MAX - 1;

/// The main thread's loop: queue notifications and host descriptors to their devices, until
/// `exit_evt`.
fn event_loop(
    shared: &Shared,
    exit_evt: &EventFd,
    input: Option<std::os::fd::RawFd>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        exit_evt.as_raw_fd(),
        EpollEvent::new(EventSet::IN, u64::MAX),
    )?;
    for (d, t) in shared.virtio.iter().enumerate() {
        let t = devices::lock(t);
        for q in 0..t.queue_count() {
            let token = ((d as u64) << 16) | q as u64;
            epoll.ctl(
                ControlOperation::Add,
                t.notify_evt(q).as_raw_fd(),
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        // The device's own descriptor (a tap), edge-triggered: the device drains it.
        if let Some(fd) = t.fd() {
            let token = ((d as u64) << 16) | HOST_FD;
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, token),
            )?;
        }
    }
    // Input waits in its pipe or terminal while the guest cannot take it (then the loop looks
    // again every 50 ms). A descriptor epoll cannot watch (/dev/null, a file) is no input.
    let mut input = input.filter(|&fd| {
        epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, INPUT),
            )
            .is_ok()
    });
    let mut paused = false;
    // From here on the main thread only works the queues, waits, kicks and tears down.
    let dirs: Vec<_> = shared
        .virtio
        .iter()
        .filter_map(|d| devices::lock(d).unlink_dir())
        .collect();
    seccomp::apply_main(&dirs).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut events = vec![EpollEvent::default(); 16];
    loop {
        let n = match epoll.wait(if paused { 50 } else { -1 }, &mut events) {
            Ok(0) if paused => {
                if let Some(fd) = input {
                    paused = false;
                    epoll.ctl(
                        ControlOperation::Modify,
                        fd,
                        EpollEvent::new(EventSet::IN, INPUT),
                    )?;
                }
                continue;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == u64::MAX {
                let _ = exit_evt.read();
                return Ok(());
            }
            if token == INPUT {
                let Some(fd) = input else { continue };
                let room = shared.legacy.input_room().min(64);
                if room == 0 {
                    paused = true;
                    epoll.ctl(
                        ControlOperation::Modify,
                        fd,
                        EpollEvent::new(EventSet::empty(), INPUT),
                    )?;
                    continue;
                }
                let mut buf = [0u8; 64];
                // SAFETY: read(2) into a live local buffer of at least `room` bytes.
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), room) };
                if n <= 0 {
                    // End of input (or an error): no more of it.
                    let _ = epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
                    input = None;
                } else {
                    shared.legacy.input(&buf[..n as usize]);
                }
                continue;
            }
            let d = (token >> 16) as usize;
            if token & HOST_FD != 0 {
                devices::lock(&shared.virtio[d]).event(&shared.mem);
                continue;
            }
            let q = (token & 0xffff) as usize;
            devices::lock(&shared.virtio[d]).notified(q, &shared.mem);
        }
    }
}

/// Boot the VM and run it until it ends. A VM that does not start leaves nothing behind (a
/// copy-on-write layer file it created is removed).
pub fn run(cfg: &Config) -> Result<Exit> {
    let new_layers: Vec<&PathBuf> = cfg
        .disks
        .iter()
        .filter_map(|d| match &d.mode {
            virtio::block::Mode::Cow(Some(p)) if !p.exists() => Some(p),
            _ => None,
        })
        .collect();
    let r = boot_and_run(cfg);
    if r.is_err() {
        for p in new_layers {
            let _ = std::fs::remove_file(p);
        }
    }
    r
}

fn boot_and_run(cfg: &Config) -> Result<Exit> {
    cfg.validate()?;
    let ranges = arch::ram_ranges(cfg.mem_bytes)?;
    let kvm = Kvm::new().map_err(|e| Error::Kvm("opening /dev/kvm", e))?;
    let vm = kvm
        .create_vm()
        .map_err(|e| Error::Kvm("KVM_CREATE_VM", e))?;
    arch::setup_vm(&kvm, &vm)?;
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
    let (kernel, entry) = load_kernel(&mem, cfg)?;
    let devices = virtio_devices(&vm, cfg)?;
    let cmd_err = |e| Error::boot("the command line", e);
    let mut cmdline = linux_loader::cmdline::Cmdline::new(arch::CMDLINE_MAX).map_err(cmd_err)?;
    if !cfg.cmdline.is_empty() {
        cmdline.insert_str(&cfg.cmdline).map_err(cmd_err)?;
    }
    for i in 0..devices.len() {
        cmdline
            .insert_str(format!(
                "virtio_mmio.device=4K@{:#x}:{}",
                arch::MMIO_START + i as u64 * virtio::mmio::WINDOW,
                arch::FIRST_DEVICE_IRQ + i as u32
            ))
            .map_err(cmd_err)?;
    }
    let cmdline_len = cmdline
        .as_cstring()
        .map_err(cmd_err)?
        .as_bytes_with_nul()
        .len();
    linux_loader::loader::load_cmdline(&mem, GuestAddress(arch::CMDLINE), &cmdline)
        .map_err(|e| Error::boot("loading the command line", e))?;
    let initrd = match &cfg.initrd {
        Some(p) => {
            let data = std::fs::read(p).map_err(io(p.display()))?;
            let at = arch::initrd_addr(&mem, data.len())?;
            mem.write_slice(&data, at)
                .map_err(|e| Error::boot("loading the initrd", e))?;
            Some((at, data.len()))
        }
        None => None,
    };
    let acpi_devices: Vec<_> = (0..devices.len())
        .map(|i| arch::acpi::MmioDevice {
            base: arch::MMIO_START + i as u64 * virtio::mmio::WINDOW,
            len: virtio::mmio::WINDOW,
            irq: arch::FIRST_DEVICE_IRQ + i as u32,
        })
        .collect();
    let rsdp = arch::acpi::write(&mem, cfg.vcpus, &acpi_devices)?;
    arch::write_boot_params(&mem, kernel.setup_header, cmdline_len, initrd, rsdp)?;
    arch::regs::write_tables(&mem)?;
    arch::mptable::write(&mem, cfg.vcpus)?;

    let irq4 = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
    vm.register_irqfd(&irq4, 4)
        .map_err(|e| Error::Kvm("KVM_IRQFD", e))?;
    let exit_evt = EventFd::new(0).map_err(io("eventfd"))?;
    let out: Box<dyn Write + Send> = match &cfg.console {
        Console::Stdout => Box::new(std::io::stdout()),
        Console::File(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(io(p.display()))?,
        ),
    };
    let shared = Arc::new(Shared {
        legacy: devices::Legacy::new(irq4, exit_evt.try_clone().map_err(io("eventfd"))?, out),
        stop: AtomicBool::new(false),
        exit: Mutex::new(None),
        exit_evt: exit_evt.try_clone().map_err(io("eventfd"))?,
        mem: mem.clone(),
        virtio: devices.into_iter().map(Mutex::new).collect(),
    });

    let mut vcpus = Vec::new();
    for id in 0..cfg.vcpus {
        let fd = vm
            .create_vcpu(id as u64)
            .map_err(|e| Error::Kvm("KVM_CREATE_VCPU", e))?;
        arch::regs::setup_cpu(&kvm, &fd, id, cfg.vcpus)?;
        if id == 0 {
            arch::regs::setup_boot_cpu(&fd, entry)?;
        }
        vcpus.push(fd);
    }
    vcpu::install_kick_handler()?;
    vcpu::stop_on_signals(&exit_evt)?;
    let threads: Vec<_> = vcpus
        .into_iter()
        .enumerate()
        .map(|(id, fd)| vcpu::spawn(id, fd, shared.clone()))
        .collect::<std::io::Result<_>>()
        .map_err(io("starting a vCPU thread"))?;
    // Work on the devices' queues until a vCPU or the i8042 says the VM is over.
    // Console input: the terminal's (or a pipe's) bytes on stdin go to the serial port.
    if let Err(e) = event_loop(&shared, &exit_evt, Some(libc::STDIN_FILENO)) {
        shared.end(Exit::Error(e.to_string()));
    }
    shared.stop.store(true, Ordering::SeqCst);
    for _ in 0..400 {
        if threads.iter().all(|t| t.is_finished()) {
            break;
        }
        for t in threads.iter().filter(|t| !t.is_finished()) {
            vcpu::kick(t);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for t in threads {
        let _ = t.join();
    }
    shared.legacy.flush();
    let why = shared.exit.lock().unwrap_or_else(|e| e.into_inner()).take();
    vcpu::stop_on_signals_done();
    Ok(why.unwrap_or_else(|| match vcpu::stopped_by() {
        0 => Exit::Reset,
        sig => Exit::Stopped(sig),
    }))
}
