//! The Intel MultiProcessor table (MP spec 1.4) that tells a guest without ACPI how many CPUs
//! it has and how the ISA interrupts reach the IOAPIC. Built as bytes from the spec's layouts.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::EBDA;
use crate::{Error, Result};

/// The most vCPUs the table has room for below 640 KiB.
pub const MAX_CPUS: u8 = 32;
const LAPIC_ADDR: u32 = 0xfee0_0000;
const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const IOAPIC_PINS: u8 = 24;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The table for `cpus` processors, as it sits at `at` (floating pointer first).
pub fn build(cpus: u8, at: u64) -> Vec<u8> {
    let ioapic_id = cpus;
    let mut entries: Vec<u8> = Vec::new();
    let mut count = 0u16;
    for id in 0..cpus {
        // Processor: type 0, APIC id, version, flags (enabled; bootstrap for 0), signature,
        // features (FPU, APIC), reserved.
        entries.extend_from_slice(&[0, id, 0x14, if id == 0 { 3 } else { 1 }]);
        entries.extend_from_slice(&0x0600u32.to_le_bytes());
        entries.extend_from_slice(&0x0201u32.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    // The ISA bus.
    entries.extend_from_slice(&[1, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    // The IOAPIC: type 2, id, version, enabled, address.
    entries.extend_from_slice(&[2, ioapic_id, 0x11, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 2;
    // ISA IRQ n → IOAPIC pin n (IRQ 0 through the PIC: ExtINT).
    for irq in 0..IOAPIC_PINS {
        let kind = if irq == 0 { 3 } else { 0 };
        entries.extend_from_slice(&[3, kind, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // Local interrupts: LINT0 ExtINT, LINT1 NMI, to every local APIC.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_at = at + 16;
    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"CELLVISR");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&[0, 0, 0, 0]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&(table_at as u32).to_le_bytes());
    fp.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    fp[10] = checksum(&fp);
    fp.extend_from_slice(&table);
    fp
}

/// Write the table for `cpus` processors at the EBDA.
pub fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<()> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(Error::Config(format!(
            "vcpus: {cpus} is outside 1..{MAX_CPUS}"
        )));
    }
    let t = build(cpus, EBDA);
    if t.len() as u64 > 0xa0000 - EBDA {
        return Err(Error::Layout(
            "the MP table does not fit below 640 KiB".into(),
        ));
    }
    mem.write_slice(&t, GuestAddress(EBDA))
        .map_err(|e| Error::boot("writing the MP table", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts_are_right() {
        for cpus in [1u8, 2, MAX_CPUS] {
            let t = build(cpus, EBDA);
            assert_eq!(&t[..4], b"_MP_");
            let sum = |b: &[u8]| b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
            assert_eq!(sum(&t[..16]), 0, "floating pointer checksum");
            let table = &t[16..];
            assert_eq!(&table[..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0, "table checksum");
            let count = u16::from_le_bytes([table[34], table[35]]);
            assert_eq!(count as usize, cpus as usize + 2 + 24 + 2);
            assert_eq!(
                u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as u64,
                EBDA + 16
            );
            assert!(t.len() as u64 <= 0xa0000 - EBDA);
        }
    }
}
