//! x86_64: the guest physical memory map, the Linux boot protocol (zero page, e820, command
//! line), the MP table for more than one vCPU, and the registers a vCPU starts with.

pub mod acpi;
pub mod mptable;
pub mod regs;

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::{Error, Result};

/// Where the 64-bit GDT lives.
pub const GDT_ADDR: u64 = 0x500;
/// An empty IDT (the guest installs its own).
pub const IDT_ADDR: u64 = 0x540;
/// The Linux zero page (`boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// The boot stack's top.
pub const BOOT_STACK: u64 = 0x8ff0;
/// Identity-mapping page tables for the first 4 GiB: PML4, PDPT, four page directories.
pub const PML4: u64 = 0x9000;
pub const PDPT: u64 = 0xa000;
pub const PD: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 4096;
/// The extended BIOS data area, where the MP table goes; low RAM ends here.
pub const EBDA: u64 = 0x9fc00;
/// Kernels load at 1 MiB.
pub const HIMEM: u64 = 0x100000;
/// Device MMIO sits above RAM, below 4 GiB: guest RAM ends here at most.
pub const MMIO_START: u64 = 0xd000_0000;
/// The first interrupt line for virtio devices (0-4 are the legacy devices').
pub const FIRST_DEVICE_IRQ: u32 = 5;
/// virtio devices a VM can have: one IOAPIC pin each, from [`FIRST_DEVICE_IRQ`].
pub const MAX_DEVICES: usize = mptable::IOAPIC_PINS as usize - FIRST_DEVICE_IRQ as usize;
/// vCPUs a VM can have (the MP table's and the MADT's processors).
pub const MAX_VCPUS: u8 = mptable::MAX_CPUS;

/// Memory ranges of a VM with `bytes` of RAM.
pub fn ram_ranges(bytes: u64) -> Result<Vec<(GuestAddress, usize)>> {
    if bytes < 16 << 20 {
        return Err(Error::Config(format!(
            "memory: {} MiB is too little (at least 16 MiB)",
            bytes >> 20
        )));
    }
    if bytes > MMIO_START {
        return Err(Error::Config(format!(
            "memory: at most {} MiB for now",
            MMIO_START >> 20
        )));
    }
    Ok(vec![(GuestAddress(0), bytes as usize)])
}

/// The VM-wide x86 pieces: the TSS area KVM needs, the in-kernel PIC/IOAPIC/LAPIC, the PIT.
pub fn setup_vm(_kvm: &Kvm, vm: &VmFd) -> Result<()> {
    vm.set_tss_address(0xfffb_d000)
        .map_err(|e| Error::Kvm("KVM_SET_TSS_ADDR", e))?;
    vm.create_irq_chip()
        .map_err(|e| Error::Kvm("KVM_CREATE_IRQCHIP", e))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(|e| Error::Kvm("KVM_CREATE_PIT2", e))?;
    Ok(())
}

/// Write the zero page: the kernel's setup header (a bzImage's own, or a fresh one for an ELF
/// vmlinux), the command line, the initrd, and the e820 map.
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<(GuestAddress, usize)>,
    rsdp: u64,
) -> Result<()> {
    let mut p = boot_params::default();
    if let Some(h) = header {
        p.hdr = h;
    }
    p.hdr.type_of_loader = 0xff;
    p.hdr.boot_flag = 0xaa55;
    p.hdr.header = 0x5372_6448; // "HdrS"
    p.hdr.cmd_line_ptr = CMDLINE as u32;
    p.hdr.cmdline_size = cmdline_len as u32;
    p.hdr.kernel_alignment = 0x0100_0000;
    if let Some((addr, len)) = initrd {
        p.hdr.ramdisk_image = addr.raw_value() as u32;
        p.hdr.ramdisk_size = len as u32;
    }
    p.acpi_rsdp_addr = rsdp;
    let end = mem.last_addr().raw_value() + 1;
    let e820 = [
        (0, EBDA, 1u32),
        (EBDA, HIMEM - EBDA, 2),
        (HIMEM, end - HIMEM, 1),
    ];
    for (i, &(addr, size, typ)) in e820.iter().enumerate() {
        p.e820_table[i].addr = addr;
        p.e820_table[i].size = size;
        p.e820_table[i].r#type = typ;
    }
    p.e820_entries = e820.len() as u8;
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new::<boot_params>(&p, GuestAddress(ZERO_PAGE)),
        mem,
    )
    .map_err(|e| Error::boot("writing the zero page", e))
}

/// Where the initrd goes: page-aligned, as high in RAM as it fits.
pub fn initrd_addr(mem: &GuestMemoryMmap, len: usize) -> Result<GuestAddress> {
    let end = mem.last_addr().raw_value() + 1;
    let addr = end
        .checked_sub(len as u64)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= HIMEM)
        .ok_or_else(|| {
            Error::Layout(format!(
                "the initrd ({len} bytes) does not fit in guest RAM"
            ))
        })?;
    Ok(GuestAddress(addr))
}
