//! `cellvisor vm`: microVMs on cellvisor's own VMM (the `vmm` crate). The arguments are
//! `vmm::Config`'s own ([`vmm::Config::args`] writes them back, for a jailer).

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum VmCmd {
    /// Boot a kernel in a microVM and run it until the guest resets or powers off
    Run(Box<RunArgs>),
    /// A running VM's balloon (through its --control socket): set its target with --size,
    /// or print its figures and the guest's memory statistics (JSON)
    Balloon(BalloonArgs),
}

#[derive(Args, Debug)]
pub struct BalloonArgs {
    /// The VM's control socket (`vm run --control PATH`)
    #[arg(long)]
    control: PathBuf,
    /// The balloon's new size: memory the guest is asked to give back (e.g. 64M)
    #[arg(long)]
    size: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
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
    #[arg(long, default_value = vmm::DEFAULT_CMDLINE)]
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
    /// Run vCPU i on the i-th of these CPUs alone (a realtime domain's cores)
    #[arg(long, value_name = "CPU,...")]
    vcpu_cpus: Option<vmm::pin::CpuList>,
    /// Run the VMM's other threads (the device loop and its helpers) on these CPUs
    #[arg(long, value_name = "CPU,...")]
    vmm_cpus: Option<vmm::pin::CpuList>,
    /// Give the vCPU threads a real-time policy: fifo:PRIORITY or rr:PRIORITY (1..99)
    #[arg(long, value_name = "POLICY:PRIORITY")]
    vcpu_sched: Option<vmm::VcpuSched>,
    /// Offer guest memory to the kernel's page merging (KSM, when it runs): identical pages
    /// of such VMs are kept once. A merged page is a side channel between the VMs sharing it
    #[arg(long)]
    mergeable: bool,
    /// A virtio balloon: size=MIB asks the guest to give that much back at start (0 by
    /// default; `vm balloon` changes it later), reporting has the guest hand back the memory it
    /// frees (free page reporting), deflate-on-oom lets it take the balloon back before it
    /// runs out, stats=SECS refreshes its memory statistics that often; `on` for none
    #[arg(
        long,
        value_name = "[size=MIB][,reporting][,deflate-on-oom][,stats=SECS]"
    )]
    balloon: Option<vmm::virtio::balloon::BalloonSpec>,
    /// A control socket for the running VM (`cellvisor vm balloon --control PATH`)
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
}

impl RunArgs {
    fn config(&self) -> Result<vmm::Config> {
        let mem_bytes = domain::profile::parse_size(&self.mem)
            .ok_or_else(|| anyhow!("--mem: {:?} is not a size like 128M", self.mem))?;
        Ok(vmm::Config {
            kernel: self.kernel.clone(),
            keep_bzimage: self.keep_bzimage,
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
            mem_bytes,
            vcpus: self.vcpus,
            console: match &self.console {
                Some(p) => vmm::Console::File(p.clone()),
                None => vmm::Console::Stdout,
            },
            disks: self.disks.clone(),
            nets: self.nets.clone(),
            vsock: self.vsock.clone(),
            vcpu_cpus: self.vcpu_cpus.clone().map(|c| c.0).unwrap_or_default(),
            vmm_cpus: self.vmm_cpus.clone().map(|c| c.0).unwrap_or_default(),
            vcpu_sched: self.vcpu_sched,
            mergeable: self.mergeable,
            balloon: self.balloon.clone(),
            control: self.control.clone(),
        })
    }
}

pub fn run(cmd: &VmCmd) -> Result<i32> {
    match cmd {
        VmCmd::Run(a) => match vmm::run(&a.config()?)? {
            vmm::Exit::Reset | vmm::Exit::Poweroff => Ok(0),
            vmm::Exit::Stopped(sig) => Ok(128 + sig),
            vmm::Exit::Shutdown(why) => Err(anyhow!("the guest stopped: {why}")),
            vmm::Exit::Error(why) => Err(anyhow!("the VM failed: {why}")),
        },
        VmCmd::Balloon(a) => {
            let req = match &a.size {
                Some(s) => {
                    let bytes = domain::profile::parse_size(s)
                        .ok_or_else(|| anyhow!("--size: {s:?} is not a size like 64M"))?;
                    serde_json::json!({"op": "balloon", "size_mib": bytes >> 20})
                }
                None => serde_json::json!({"op": "balloon-stats"}),
            };
            let v = vmm::control::request(&a.control, &req).map_err(|e| anyhow!(e))?;
            println!("{v}");
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        vm: VmCmd,
    }

    fn parsed(args: &[String]) -> vmm::Config {
        let cli = Cli::try_parse_from(
            ["vm", "run"]
                .iter()
                .map(|s| s.to_string())
                .chain(args.iter().cloned()),
        )
        .unwrap();
        let VmCmd::Run(a) = cli.vm else {
            panic!("not vm run")
        };
        a.config().unwrap()
    }

    /// What a jailer writes with `Config::args` is the same VM when this command reads it.
    #[test]
    fn a_configs_arguments_parse_back_to_it() {
        let mut c = vmm::Config::new("/k");
        assert_eq!(parsed(&c.args()), c);
        c.keep_bzimage = true;
        c.initrd = Some("/i".into());
        c.cmdline = "console=ttyS0 quiet cellvisor.run=\"a b\"".into();
        c.mem_bytes = (64 << 20) + 4096;
        c.vcpus = 3;
        c.console = vmm::Console::File("/c".into());
        c.disks = vec![
            "/a".parse().unwrap(),
            "/b,ro".parse().unwrap(),
            "/c,cow".parse().unwrap(),
        ];
        c.nets = vec!["tap0,mac=02:00:00:00:00:01,ip=10.0.0.1/24".parse().unwrap()];
        c.vsock = Some("3,uds=/run/v".parse().unwrap());
        c.vcpus = 2;
        c.vcpu_cpus = vec![3, 1];
        c.vmm_cpus = vec![0];
        c.vcpu_sched = Some(vmm::VcpuSched::Rr(7));
        c.balloon = Some("size=16,deflate-on-oom,reporting,stats=1".parse().unwrap());
        c.control = Some("/run/c.sock".into());
        assert_eq!(parsed(&c.args()), c);
    }
}
