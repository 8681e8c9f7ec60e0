//! ACPI tables for the guest (acpi_tables crate): a hardware-reduced platform, as a microVM
//! has no chipset. The MADT gives the vCPUs' local APICs and the I/O APIC (kernels built
//! without MP-table parsing, like Debian's, find their CPUs only here); the DSDT names each
//! virtio-mmio device (`LNRO0005`, its window and interrupt: kernels whose virtio_mmio does
//! not take devices from the command line find them only here) and the S5 sleep state; the
//! FADT's sleep control register (an I/O port) is how the guest powers off, its reset register
//! how it reboots. COM1 is declared too, with its interrupt: without a legacy PIC, nothing else
//! tells the kernel where IRQ 4 goes.

use acpi_tables::{aml, fadt, gas, madt, rsdp::Rsdp, sdt::Sdt, xsdt::XSDT, Aml};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::{Error, Result};

/// The RSDP sits where a BIOS would put it (Linux scans 0xe0000-0xfffff), the other tables after.
pub const RSDP_ADDR: u64 = 0x000e_0000;
const TABLES: u64 = RSDP_ADDR + 0x100;
const TABLES_END: u64 = 0x0010_0000;

/// The sleep control register: SLP_EN with SLP_TYP 5 (S5) powers off.
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
/// The sleep status register (reads as zero).
pub const SLEEP_STATUS_PORT: u16 = 0x601;
/// The reset register: RESET_VALUE written here resets the machine.
pub const RESET_PORT: u16 = 0x604;
pub const RESET_VALUE: u8 = 1;
/// SLP_TYP of S5 as the DSDT's \_S5_ gives it, and SLP_EN.
pub const S5_TYPE: u8 = 5;
pub const SLP_EN: u8 = 1 << 5;

const OEM_ID: [u8; 6] = *b"CELVSR";
const OEM_TABLE: [u8; 8] = *b"CELLVMM ";

const IOAPIC_ADDR: u32 = 0xfec0_0000;
const LAPIC_ADDR: u32 = 0xfee0_0000;

/// One virtio-mmio device for the DSDT: its window and its interrupt line.
#[derive(Debug, Clone, Copy)]
pub struct MmioDevice {
    pub base: u64,
    pub len: u64,
    pub irq: u32,
}

fn dsdt(devices: &[MmioDevice]) -> Vec<u8> {
    let mut body = Vec::new();
    // \_S5_: the sleep type values written to the sleep control register for soft-off.
    aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_TYPE, &0u8, &0u8, &0u8]),
    )
    .to_aml_bytes(&mut body);
    // COM1: a hardware-reduced platform has no legacy PIC and no identity-mapped ISA
    // interrupts, so the UART's interrupt line must be declared (the kernel's 8250_pnp binds it).
    let io = aml::IO::new(0x3f8, 0x3f8, 1, 8);
    let irq4 = aml::Interrupt::new(true, true, false, false, 4);
    let crs = aml::ResourceTemplate::new(vec![&io, &irq4]);
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let crs_n = aml::Name::new("_CRS".into(), &crs);
    let com1 = aml::Device::new("COM1".into(), vec![&hid, &uid, &crs_n]);
    aml::Scope::new("\\_SB_".into(), vec![&com1]).to_aml_bytes(&mut body);
    let names: Vec<String> = (0..devices.len()).map(|i| format!("V{i:03X}")).collect();
    for (i, d) in devices.iter().enumerate() {
        let mem = aml::Memory32Fixed::new(true, d.base as u32, d.len as u32);
        // Edge-triggered, active high: the VMM raises it through an irqfd.
        let irq = aml::Interrupt::new(true, true, false, false, d.irq);
        let uid = i as u32;
        let crs = aml::ResourceTemplate::new(vec![&mem, &irq]);
        let hid = aml::Name::new("_HID".into(), &"LNRO0005");
        let uid_n = aml::Name::new("_UID".into(), &uid);
        let crs_n = aml::Name::new("_CRS".into(), &crs);
        let dev = aml::Device::new(names[i].as_str().into(), vec![&hid, &uid_n, &crs_n]);
        aml::Scope::new("\\_SB_".into(), vec![&dev]).to_aml_bytes(&mut body);
    }
    let mut t = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE, 1);
    t.append_slice(&body);
    t.as_slice().to_vec()
}

fn madt(vcpus: u8) -> Vec<u8> {
    let mut m = madt::MADT::new(
        OEM_ID,
        OEM_TABLE,
        1,
        madt::LocalInterruptController::Address(LAPIC_ADDR),
    );
    for id in 0..vcpus {
        m.add_structure(madt::ProcessorLocalApic::new(
            id,
            id,
            madt::EnabledStatus::Enabled,
        ));
    }
    m.add_structure(madt::IoApic::new(0, IOAPIC_ADDR, 0));
    let mut out = Vec::new();
    m.to_aml_bytes(&mut out);
    out
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let io8 = |port: u16| {
        gas::GAS::new(
            gas::AddressSpace::SystemIo,
            8,
            0,
            gas::AccessSize::ByteAccess,
            port.into(),
        )
    };
    let mut b = fadt::FADTBuilder::new(OEM_ID, OEM_TABLE, 1)
        .dsdt_64(dsdt_addr)
        .flag(fadt::Flags::HwReducedAcpi)
        .flag(fadt::Flags::ResetRegSup)
        .flag(fadt::Flags::PwrButton)
        .flag(fadt::Flags::SlpButton);
    b.sleep_control_reg = io8(SLEEP_CONTROL_PORT);
    b.sleep_status_reg = io8(SLEEP_STATUS_PORT);
    b.reset_reg = io8(RESET_PORT);
    b.reset_value = RESET_VALUE;
    let mut out = Vec::new();
    b.finalize().to_aml_bytes(&mut out);
    out
}

/// Write the RSDP and the tables it leads to; returns the RSDP's address (for the zero page).
pub fn write(mem: &GuestMemoryMmap, vcpus: u8, devices: &[MmioDevice]) -> Result<u64> {
    let mut at = TABLES;
    let mut put = |bytes: &[u8]| -> Result<u64> {
        let addr = at;
        if addr + bytes.len() as u64 > TABLES_END {
            return Err(Error::Layout(
                "the ACPI tables do not fit below 1 MiB".into(),
            ));
        }
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|e| Error::boot("writing ACPI tables", e))?;
        at = (addr + bytes.len() as u64 + 15) & !15;
        Ok(addr)
    };
    let dsdt_addr = put(&dsdt(devices))?;
    let fadt_addr = put(&fadt(dsdt_addr))?;
    let madt_addr = put(&madt(vcpus))?;
    let mut x = XSDT::new(OEM_ID, OEM_TABLE, 1);
    x.add_entry(fadt_addr);
    x.add_entry(madt_addr);
    let mut xb = Vec::new();
    x.to_aml_bytes(&mut xb);
    let xsdt_addr = put(&xb)?;
    let mut rb = Vec::new();
    Rsdp::new(OEM_ID, xsdt_addr).to_aml_bytes(&mut rb);
    mem.write_slice(&rb, GuestAddress(RSDP_ADDR))
        .map_err(|e| Error::boot("writing the RSDP", e))?;
    Ok(RSDP_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn tables_have_valid_checksums_and_lengths() {
        let devs = [MmioDevice {
            base: 0xd000_0000,
            len: 0x1000,
            irq: 5,
        }];
        for t in [dsdt(&devs), madt(4), fadt(0x1234)] {
            assert_eq!(sum(&t), 0, "{:?}", &t[..4]);
            assert_eq!(
                u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize,
                t.len()
            );
        }
        let d = dsdt(&devs);
        let find = |needle: &[u8]| d.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"_S5_") && find(b"LNRO0005") && find(b"V000"));
        // MADT: 44-byte header, four 8-byte local APICs, one 12-byte I/O APIC.
        assert_eq!(madt(4).len(), 44 + 4 * 8 + 12);
    }

    #[test]
    fn the_rsdp_leads_to_every_table() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let rsdp = write(&mem, 2, &[]).unwrap();
        let mut r = [0u8; 36];
        mem.read_slice(&mut r, GuestAddress(rsdp)).unwrap();
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!(sum(&r[..20]), 0);
        assert_eq!(sum(&r), 0);
        let xsdt = u64::from_le_bytes(r[24..32].try_into().unwrap());
        let mut h = [0u8; 52];
        mem.read_slice(&mut h, GuestAddress(xsdt)).unwrap();
        assert_eq!(&h[..4], b"XSDT");
        let mut sigs = Vec::new();
        for i in 0..2 {
            let a = u64::from_le_bytes(h[36 + 8 * i..44 + 8 * i].try_into().unwrap());
            let mut s = [0u8; 4];
            mem.read_slice(&mut s, GuestAddress(a)).unwrap();
            sigs.push(s);
        }
        assert_eq!(sigs, [*b"FACP", *b"APIC"]);
    }
}
