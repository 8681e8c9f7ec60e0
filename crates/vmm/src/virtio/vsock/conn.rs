//! One stream between a host program and the guest: where it stands, and the credit
//! (virtio-vsock flow control) of both directions.

use std::io::Write;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Host-initiated, waiting for the guest's RESPONSE.
    Connecting,
    Established,
}

/// One stream: (host port, guest port).
pub(super) struct Conn {
    pub stream: UnixStream,
    pub state: State,
    /// Bytes sent to the guest, and the guest's window.
    pub rx_cnt: Wrapping<u32>,
    pub peer_buf_alloc: u32,
    pub peer_fwd_cnt: Wrapping<u32>,
    /// Bytes from the guest handed to the host program, and what the guest was last told.
    pub fwd_cnt: Wrapping<u32>,
    pub told_fwd_cnt: Wrapping<u32>,
    /// Guest bytes the host program has not taken yet.
    pub out: Vec<u8>,
    /// The host side may have bytes to read (edge-triggered: until a read says EAGAIN).
    pub readable: bool,
    pub host_eof: bool,
    /// The guest will send no more: close the host program's input once `out` is handed over.
    pub shut_write: bool,
    pub write_closed: bool,
}

impl Conn {
    pub fn new(stream: UnixStream, state: State) -> Conn {
        Conn {
            stream,
            state,
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            told_fwd_cnt: Wrapping(0),
            out: Vec::new(),
            readable: true,
            host_eof: false,
            shut_write: false,
            write_closed: false,
        }
    }
    pub fn credit(&self) -> usize {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight) as usize
    }
    /// Hand the host program what it will take. Err: it is gone.
    pub fn flush(&mut self) -> std::io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    // The "OK <port>" line is ours, not the guest's: only payload counts.
                    self.out.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        if self.shut_write && !self.write_closed {
            // Once: each shutdown wakes the epoll set again.
            self.write_closed = true;
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }
}
