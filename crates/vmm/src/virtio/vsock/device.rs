//! The virtio device: the guest's RX queue filled from the muxer, its TX queue handed to
//! it, packet by packet.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::muxer::Muxer;
use super::packet::{Hdr, HDR};
use super::{io_err, Error, VsockSpec, MAX_PAYLOAD, RX, TX};
use crate::virtio::{Device, Fault, F_VERSION_1};

/// The virtio vsock device.
pub struct Vsock {
    config: [u8; 8],
    uds: PathBuf,
    /// The socket's directory, held open so that the socket can be removed at the end under
    /// the VMM's seccomp filter (unlinkat is allowed on this descriptor only).
    dir: std::fs::File,
    mux: Muxer,
    /// The payload of the packet the guest sent last (its capacity kept).
    tx_buf: Vec<u8>,
}

impl Vsock {
    /// Listen on the spec's socket. A stale socket (nobody listening) is replaced; one in use
    /// is an error.
    pub fn new(spec: &VsockSpec) -> Result<Vsock, Error> {
        let p = &spec.uds;
        let invalid = |msg| Error::Invalid {
            path: p.clone(),
            msg,
        };
        if p.exists() {
            if UnixStream::connect(p).is_ok() {
                return Err(invalid("in use by another VMM"));
            }
            std::fs::remove_file(p).map_err(io_err(p))?;
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = std::fs::File::open(parent).map_err(io_err(p))?;
        if p.file_name().is_none() {
            return Err(invalid("not a socket path"));
        }
        let listener = UnixListener::bind(p).map_err(io_err(p))?;
        let cleanup = |e: Error| {
            let _ = std::fs::remove_file(p);
            e
        };
        listener
            .set_nonblocking(true)
            .map_err(|e| cleanup(io_err(p)(e)))?;
        let mux = Muxer::new(spec.cid, p, listener).map_err(cleanup)?;
        Ok(Vsock {
            config: spec.cid.to_le_bytes(),
            uds: p.clone(),
            dir,
            mux,
            tx_buf: Vec::new(),
        })
    }

    /// Fill the guest's RX buffers. Returns whether any was used.
    fn fill_rx(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, Fault> {
        let mut used = false;
        loop {
            let Some(chain) = q
                .iter(mem)
                .map_err(|e| Fault(format!("vsock: rx ring: {e}")))?
                .next()
            else {
                return Ok(used);
            };
            let head = chain.head_index();
            let mut w = chain
                .writer(mem)
                .map_err(|e| Fault(format!("vsock: rx buffers: {e}")))?;
            let room = w.available_bytes();
            if room < HDR {
                return Err(Fault(format!("vsock: an rx buffer of {room} bytes")));
            }
            let Some((h, n)) = self.mux.next_for_guest(room - HDR) else {
                q.go_to_previous_position();
                return Ok(used);
            };
            w.write_all(&h.bytes())
                .and_then(|_| w.write_all(&self.mux.buf[..n]))
                .map_err(|e| Fault(format!("vsock: rx buffers: {e}")))?;
            q.add_used(mem, head, (HDR + n) as u32)
                .map_err(|e| Fault(format!("vsock: rx used ring: {e}")))?;
            used = true;
        }
    }

    fn take_tx(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, Fault> {
        // One payload buffer for every packet (taken out so that `on_packet` may borrow self).
        let mut payload = std::mem::take(&mut self.tx_buf);
        let r = crate::virtio::drain(q, mem, "vsock tx", |chain| {
            let mut r = chain
                .reader(mem)
                .map_err(|e| Fault(format!("vsock: tx buffers: {e}")))?;
            let mut hb = [0u8; HDR];
            r.read_exact(&mut hb)
                .map_err(|_| Fault("vsock: a tx packet shorter than its header".into()))?;
            let h = Hdr::parse(&hb);
            let len = h.len as usize;
            if len > MAX_PAYLOAD || len > r.available_bytes() {
                return Err(Fault(format!("vsock: a tx packet claims {len} bytes")));
            }
            payload.resize(len, 0);
            r.read_exact(&mut payload)
                .map_err(|e| Fault(format!("vsock: tx buffers: {e}")))?;
            self.mux.on_packet(h, &payload)?;
            Ok(0)
        });
        self.tx_buf = payload;
        r
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        crate::reaper::unlink_in(&self.dir, &self.uds);
    }
}

impl Device for Vsock {
    fn device_type(&self) -> u32 {
        19
    }
    fn features(&self) -> u64 {
        F_VERSION_1
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 256, 16]
    }
    fn config(&self) -> &[u8] {
        &self.config
    }
    fn process(
        &mut self,
        q: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, Fault> {
        let mut used = false;
        if q == TX {
            used |= self.take_tx(&mut queues[TX], mem)?;
        }
        if queues[RX].ready() {
            used |= self.fill_rx(&mut queues[RX], mem)?;
        }
        Ok(used)
    }
    fn reset(&mut self) {
        self.mux.reset_all();
    }
    fn fd(&self) -> Option<RawFd> {
        Some(self.mux.epoll_fd())
    }
    fn unlink_dir(&self) -> Option<RawFd> {
        Some(self.dir.as_raw_fd())
    }
    fn event(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> Result<bool, Fault> {
        self.mux.host_events();
        Ok(queues[RX].ready() && self.fill_rx(&mut queues[RX], mem)?)
    }
}
