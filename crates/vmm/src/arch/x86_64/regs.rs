//! A vCPU's starting state for the 64-bit Linux boot protocol: long mode with paging on an
//! identity map of the first GiB, a flat GDT (with ring-3 segments too, for guests that drop to
//! user mode), CPUID from KVM, the boot MSRs, the FPU, and the local APIC's LINT pins.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, CpuId, Msrs};
use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{BOOT_STACK, GDT_ADDR, IDT_ADDR, PD, PDPT, PML4, ZERO_PAGE};
use crate::{Error, Result};

/// GDT entry from flags, base and limit (the packed x86 layout).
const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
}

/// null, kernel code (0x08), kernel data (0x10), TSS (0x18), user code (0x20), user data (0x28).
pub const GDT: [u64; 6] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
    gdt_entry(0xa0fb, 0, 0xfffff),
    gdt_entry(0xc0f3, 0, 0xfffff),
];

/// The KVM segment a GDT entry describes, loaded with `selector`.
fn segment(entry: u64, selector: u16) -> kvm_segment {
    let flags = (entry >> 40) & 0xf0ff;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: {
            let l = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
            if flags & 0x8000 != 0 {
                (l << 12) | 0xfff
            } else {
                l
            }
        },
        selector,
        type_: (flags & 0xf) as u8,
        present: ((flags >> 7) & 1) as u8,
        dpl: ((flags >> 5) & 3) as u8,
        db: ((flags >> 14) & 1) as u8,
        s: ((flags >> 4) & 1) as u8,
        l: ((flags >> 13) & 1) as u8,
        g: ((flags >> 15) & 1) as u8,
        avl: ((flags >> 12) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

fn mem_err(what: &str) -> impl Fn(vm_memory::GuestMemoryError) -> Error + '_ {
    move |e| Error::boot(format!("writing {what}"), e)
}

/// The GDT, an empty IDT, and page tables identity-mapping the first 4 GiB (RAM and the
/// device MMIO below 4 GiB) with 2 MiB pages, user-accessible, so that a test guest can run its
/// work in ring 3.
pub fn write_tables(mem: &GuestMemoryMmap) -> Result<()> {
    for (i, e) in GDT.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + 8 * i as u64))
            .map_err(mem_err("the GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(mem_err("the IDT"))?;
    const P_RW_US: u64 = 0x7;
    const PS: u64 = 0x80;
    mem.write_obj(PDPT | P_RW_US, GuestAddress(PML4))
        .map_err(mem_err("the PML4"))?;
    for g in 0..4u64 {
        let pd = PD + g * 0x1000;
        mem.write_obj(pd | P_RW_US, GuestAddress(PDPT + g * 8))
            .map_err(mem_err("the PDPT"))?;
        for i in 0..512u64 {
            let addr = (g << 30) | (i << 21);
            mem.write_obj(addr | P_RW_US | PS, GuestAddress(pd + i * 8))
                .map_err(mem_err("the page directories"))?;
        }
    }
    Ok(())
}

const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;
const CR0_PE: u64 = 0x1;
const CR0_ET: u64 = 0x10;
const CR0_PG: u64 = 0x8000_0000;
const CR4_PAE: u64 = 0x20;

/// Registers of the boot vCPU at `entry`: 64-bit mode, ring 0, RSI at the zero page.
pub fn setup_boot_cpu(vcpu: &VcpuFd, entry: u64) -> Result<()> {
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| Error::Kvm("KVM_GET_SREGS", e))?;
    let code = segment(GDT[1], 0x08);
    let data = segment(GDT[2], 0x10);
    let tss = segment(GDT[3], 0x18);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&GDT) - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr3 = PML4;
    sregs.cr4 |= CR4_PAE;
    sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)
        .map_err(|e| Error::Kvm("KVM_SET_SREGS", e))?;
    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rsi: ZERO_PAGE,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| Error::Kvm("KVM_SET_REGS", e))
}

/// What every vCPU needs: CPUID (with its APIC id), boot MSRs, the FPU, the LAPIC's LINT pins.
pub fn setup_cpu(kvm: &Kvm, vcpu: &VcpuFd, id: u8, count: u8) -> Result<()> {
    let mut cpuid: CpuId = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| Error::Kvm("KVM_GET_SUPPORTED_CPUID", e))?;
    for e in cpuid.as_mut_slice() {
        match e.function {
            // Initial APIC id and logical processor count.
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | ((id as u32) << 24) | ((count as u32) << 16);
                e.ecx |= 1 << 31; // running under a hypervisor
            }
            // x2APIC id.
            0xb | 0x1f => e.edx = id as u32,
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| Error::Kvm("KVM_SET_CPUID2", e))?;
    let msr = |index: u32, data: u64| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    let entries = [
        msr(0x174, 0),       // SYSENTER_CS
        msr(0x175, 0),       // SYSENTER_ESP
        msr(0x176, 0),       // SYSENTER_EIP
        msr(0xc000_0081, 0), // STAR
        msr(0xc000_0082, 0), // LSTAR
        msr(0xc000_0083, 0), // CSTAR
        msr(0xc000_0084, 0), // SYSCALL_MASK
        msr(0xc000_0102, 0), // KERNEL_GS_BASE
        msr(0x10, 0),        // TSC
        msr(0x1a0, 1),       // MISC_ENABLE: fast strings
    ];
    let msrs =
        Msrs::from_entries(&entries).map_err(|e| Error::boot("the MSR list", format!("{e:?}")))?;
    let n = vcpu
        .set_msrs(&msrs)
        .map_err(|e| Error::Kvm("KVM_SET_MSRS", e))?;
    if n != entries.len() {
        // Not every host has every MSR (nested hosts differ); the kernel sets what it uses.
        eprintln!("vmm: {} of {} boot MSRs set", n, entries.len());
    }
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)
        .map_err(|e| Error::Kvm("KVM_SET_FPU", e))?;
    // LINT0: external interrupts (the PIC); LINT1: NMI.
    let mut lapic = vcpu
        .get_lapic()
        .map_err(|e| Error::Kvm("KVM_GET_LAPIC", e))?;
    let set_lvt = |regs: &mut [std::os::raw::c_char; 1024], off: usize, mode: u32| {
        let mut v = [0u8; 4];
        for (i, b) in v.iter_mut().enumerate() {
            *b = regs[off + i] as u8;
        }
        let val = (u32::from_le_bytes(v) & !0x700) | (mode << 8);
        for (i, b) in val.to_le_bytes().iter().enumerate() {
            regs[off + i] = *b as std::os::raw::c_char;
        }
    };
    set_lvt(&mut lapic.regs, 0x350, 7);
    set_lvt(&mut lapic.regs, 0x360, 4);
    vcpu.set_lapic(&lapic)
        .map_err(|e| Error::Kvm("KVM_SET_LAPIC", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_the_segments_linux_expects() {
        let cs = segment(GDT[1], 0x08);
        assert_eq!(
            (cs.l, cs.db, cs.dpl, cs.present, cs.s, cs.type_),
            (1, 0, 0, 1, 1, 0xb)
        );
        assert_eq!((cs.base, cs.limit), (0, 0xffff_ffff));
        let ds = segment(GDT[2], 0x10);
        assert_eq!((ds.l, ds.db, ds.type_), (0, 1, 3));
        let ucs = segment(GDT[4], 0x23);
        assert_eq!((ucs.l, ucs.dpl), (1, 3));
        assert_eq!(GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(GDT[2], 0x00cf_9300_0000_ffff);
    }
}
