//! `cellvisor vm`: microVMs on cellvisor's own VMM (the `vmm` crate).

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum VmCmd {
    /// Boot a kernel in a microVM and run it until the guest resets or powers off
    Run {
        /// The guest kernel: an ELF vmlinux or a bzImage (whose compressed kernel is unpacked
        /// here, saving the guest its decompressor's memory)
        #[arg(long)]
        kernel: PathBuf,
        /// Boot a bzImage through its own decompressor in the guest (which keeps its KASLR)
        #[arg(long)]
        keep_bzimage: bool,
        /// An initramfs
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// The kernel command line
        #[arg(long, default_value = "console=ttyS0 reboot=k panic=-1")]
        cmdline: String,
        /// Guest memory (e.g. 128M)
        #[arg(long, default_value = "128M")]
        mem: String,
        /// Virtual CPUs
        #[arg(long, default_value_t = 1)]
        vcpus: u8,
        /// Write the serial console here instead of to the terminal
        #[arg(long)]
        console: Option<PathBuf>,
        /// A raw disk image as a virtio block device (repeatable: vda, vdb, ...): PATH
        /// read-write, PATH,ro read-only, PATH,cow the image read-only under a private
        /// copy-on-write layer that goes with the VM, PATH,cow=LAYER one kept in LAYER
        #[arg(long = "disk", value_name = "PATH[,ro|,cow[=LAYER]]")]
        disks: Vec<vmm::virtio::block::DiskSpec>,
        /// A virtio network device on tap device TAP (repeatable: eth0, eth1, ...). A TAP that
        /// does not exist is created and goes with the VM; ip= gives its host side an address
        #[arg(long = "net", value_name = "TAP[,mac=MAC][,ip=ADDR/PREFIX]")]
        nets: Vec<vmm::virtio::net::NetSpec>,
        /// A virtio vsock device with guest CID CID; host programs reach guest port P by
        /// connecting to the Unix socket PATH and writing "CONNECT P\n"; the guest reaches host
        /// port P at the Unix socket PATH_P
        #[arg(long, value_name = "CID,uds=PATH")]
        vsock: Option<vmm::virtio::vsock::VsockSpec>,
    },
}

pub fn run(cmd: &VmCmd) -> Result<i32> {
    match cmd {
        VmCmd::Run {
            kernel,
            keep_bzimage,
            initrd,
            cmdline,
            mem,
            vcpus,
            console,
            disks,
            nets,
            vsock,
        } => {
            let mem_bytes = domain::profile::parse_size(mem)
                .ok_or_else(|| anyhow!("--mem: {mem:?} is not a size like 128M"))?;
            let cfg = vmm::Config {
                kernel: kernel.clone(),
                keep_bzimage: *keep_bzimage,
                initrd: initrd.clone(),
                cmdline: cmdline.clone(),
                mem_bytes,
                vcpus: *vcpus,
                console: match console {
                    Some(p) => vmm::Console::File(p.clone()),
                    None => vmm::Console::Stdout,
                },
                disks: disks.clone(),
                nets: nets.clone(),
                vsock: vsock.clone(),
            };
            match vmm::run(&cfg)? {
                vmm::Exit::Reset | vmm::Exit::Poweroff => Ok(0),
                vmm::Exit::Stopped(sig) => Ok(128 + sig),
                vmm::Exit::Shutdown(why) => Err(anyhow!("the guest stopped: {why}")),
                vmm::Exit::Error(why) => Err(anyhow!("the VM failed: {why}")),
            }
        }
    }
}
