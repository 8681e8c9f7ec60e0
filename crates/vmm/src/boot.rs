//! What the guest finds in its memory when its first vCPU starts: the kernel (an ELF
//! vmlinux, or the one a bzImage carries, unpacked here), the command line with the virtio
//! devices on it, the initrd, and the machine's tables (ACPI, boot parameters with the e820
//! map, GDT and page tables, the MP table). The layout is the arch module's.

use std::fs::File;

use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader, KernelLoaderResult};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::{arch, io, unpack, virtio, Config, Error, Result};

/// Load the kernel: an ELF vmlinux; else a bzImage, unpacked here into the vmlinux it carries
/// when its format is one we decompress (unless `keep_bzimage`), or loaded as it is. Returns
/// the loader's result and the 64-bit entry point.
pub(crate) fn load_kernel(
    mem: &GuestMemoryMmap,
    cfg: &Config,
) -> Result<(KernelLoaderResult, u64)> {
    let mut f = guest_file(&cfg.kernel, "kernel", cfg.mem_bytes)?;
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

/// Open `path` to load into guest memory: a regular file no larger than the guest's RAM. A
/// device (`/dev/zero`) or a pipe would be read for ever, and a larger file cannot fit.
fn guest_file(path: &std::path::Path, what: &str, mem_bytes: u64) -> Result<File> {
    let f = File::open(path).map_err(io(path.display()))?;
    let meta = f.metadata().map_err(io(path.display()))?;
    if !meta.is_file() {
        return Err(Error::Config(format!(
            "{what} {}: not a regular file",
            path.display()
        )));
    }
    if meta.len() > mem_bytes {
        return Err(Error::Config(format!(
            "{what} {}: {} bytes, more than the guest's {mem_bytes} bytes of memory",
            path.display(),
            meta.len()
        )));
    }
    Ok(f)
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

/// Where virtio device `i` sits: its MMIO window and its interrupt line.
pub(crate) fn device_window(i: usize) -> (u64, u32) {
    (
        arch::MMIO_START + i as u64 * virtio::mmio::WINDOW,
        arch::FIRST_DEVICE_IRQ + i as u32,
    )
}

/// The command line: `cfg`'s, then where each of the `devices` virtio devices is (and the
/// free page reporting order a balloon that reports wants, unless `cfg`'s sets it). Written
/// into guest memory; its length with the NUL.
fn cmdline(mem: &GuestMemoryMmap, cfg: &Config, devices: usize) -> Result<usize> {
    let cmd_err = |e| Error::boot("the command line", e);
    let mut cmdline = linux_loader::cmdline::Cmdline::new(arch::CMDLINE_MAX).map_err(cmd_err)?;
    if !cfg.cmdline.is_empty() {
        cmdline.insert_str(&cfg.cmdline).map_err(cmd_err)?;
    }
    if cfg.balloon.as_ref().is_some_and(|b| b.reporting)
        && !cfg.cmdline.contains(virtio::balloon::REPORTING_ORDER_PARAM)
    {
        let order = virtio::balloon::reporting_order(cfg.mem_bytes);
        cmdline
            .insert_str(format!(
                "{}={order}",
                virtio::balloon::REPORTING_ORDER_PARAM
            ))
            .map_err(cmd_err)?;
    }
    for i in 0..devices {
        let (base, irq) = device_window(i);
        cmdline
            .insert_str(format!("virtio_mmio.device=4K@{base:#x}:{irq}"))
            .map_err(cmd_err)?;
    }
    let len = cmdline
        .as_cstring()
        .map_err(cmd_err)?
        .as_bytes_with_nul()
        .len();
    linux_loader::loader::load_cmdline(mem, GuestAddress(arch::CMDLINE), &cmdline)
        .map_err(|e| Error::boot("loading the command line", e))?;
    Ok(len)
}

/// The initrd, as high in RAM as it fits: where, and how long.
fn initrd(mem: &GuestMemoryMmap, cfg: &Config) -> Result<Option<(GuestAddress, usize)>> {
    let Some(p) = &cfg.initrd else {
        return Ok(None);
    };
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut guest_file(p, "initrd", cfg.mem_bytes)?, &mut data)
        .map_err(io(p.display()))?;
    let at = arch::initrd_addr(mem, data.len())?;
    mem.write_slice(&data, at)
        .map_err(|e| Error::boot("loading the initrd", e))?;
    Ok(Some((at, data.len())))
}

/// Everything but the kernel (already loaded as `kernel`): command line, initrd and tables,
/// for `devices` virtio devices.
pub(crate) fn write_boot_data(
    mem: &GuestMemoryMmap,
    cfg: &Config,
    kernel: &KernelLoaderResult,
    devices: usize,
) -> Result<()> {
    let cmdline_len = cmdline(mem, cfg, devices)?;
    let initrd = initrd(mem, cfg)?;
    let acpi_devices: Vec<_> = (0..devices)
        .map(|i| {
            let (base, irq) = device_window(i);
            arch::acpi::MmioDevice {
                base,
                len: virtio::mmio::WINDOW,
                irq,
            }
        })
        .collect();
    let rsdp = arch::acpi::write(mem, cfg.vcpus, &acpi_devices)?;
    arch::write_boot_params(mem, kernel.setup_header, cmdline_len, initrd, rsdp)?;
    arch::regs::write_tables(mem)?;
    arch::mptable::write(mem, cfg.vcpus)
}
