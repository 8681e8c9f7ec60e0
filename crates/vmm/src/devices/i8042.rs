//! The i8042 keyboard controller, as much of it as a Linux guest probes: the status register,
//! the controller configuration byte (read 0x20 / write 0x60), the self tests, port enables,
//! keyboard commands answered with ACK, and the CPU-reset command (0xfe) that ends the VM.
//! Without answers the guest's driver waits for timeouts at boot.

use std::collections::VecDeque;

use vm_superio::Trigger;

const STATUS_OBF: u8 = 0x01;
const STATUS_SYS: u8 = 0x04;
const STATUS_CMD: u8 = 0x08;

pub struct I8042<T: Trigger> {
    reset: T,
    out: VecDeque<u8>,
    ctr: u8,
    /// The controller command waiting for its data byte on port 0x60.
    pending: Option<u8>,
    last_was_command: bool,
}

impl<T: Trigger> I8042<T> {
    pub fn new(reset: T) -> Self {
        I8042 {
            reset,
            out: VecDeque::new(),
            // Keyboard interrupt on, system flag, translation on.
            ctr: 0x45,
            pending: None,
            last_was_command: false,
        }
    }

    /// Port 0x60 (`offset` 0) or 0x64 (`offset` 4).
    pub fn read(&mut self, offset: u8) -> u8 {
        match offset {
            0 => self.out.pop_front().unwrap_or(0),
            4 => {
                let mut s = STATUS_SYS;
                if !self.out.is_empty() {
                    s |= STATUS_OBF;
                }
                if self.last_was_command {
                    s |= STATUS_CMD;
                }
                s
            }
            _ => 0xff,
        }
    }

    pub fn write(&mut self, offset: u8, value: u8) {
        match offset {
            4 => {
                self.last_was_command = true;
                match value {
                    0x20 => self.out.push_back(self.ctr),
                    0x60 | 0xd1 | 0xd2 | 0xd3 | 0xd4 => self.pending = Some(value),
                    0xaa => self.out.push_back(0x55), // controller self test passed
                    0xab | 0xa9 => self.out.push_back(0x00), // port tests passed
                    0xfe => {
                        let _ = self.reset.trigger();
                    }
                    _ => {} // port enables and disables
                }
            }
            0 => {
                self.last_was_command = false;
                match self.pending.take() {
                    Some(0x60) => self.ctr = value,
                    Some(0xd2) => self.out.push_back(value), // as if typed
                    Some(_) => {}                            // output port, aux: dropped
                    // A command for the keyboard itself: acknowledged (reset also passes).
                    None => {
                        self.out.push_back(0xfa);
                        if value == 0xff {
                            self.out.push_back(0xaa);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;

    struct Evt(EventFd);
    impl Trigger for Evt {
        type E = std::io::Error;
        fn trigger(&self) -> std::io::Result<()> {
            self.0.write(1)
        }
    }

    #[test]
    fn the_linux_probe_gets_answers_and_reset_ends_the_vm() {
        let e = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut k = I8042::new(Evt(e.try_clone().unwrap()));
        assert_eq!(k.read(4) & STATUS_OBF, 0);
        k.write(4, 0x20);
        assert_ne!(k.read(4) & STATUS_OBF, 0);
        assert_eq!(k.read(0), 0x45);
        k.write(4, 0x60);
        k.write(0, 0x47);
        k.write(4, 0x20);
        assert_eq!(k.read(0), 0x47);
        k.write(4, 0xaa);
        assert_eq!(k.read(0), 0x55);
        k.write(0, 0xff);
        assert_eq!((k.read(0), k.read(0)), (0xfa, 0xaa));
        assert!(e.read().is_err(), "no reset yet");
        k.write(4, 0xfe);
        assert_eq!(e.read().unwrap(), 1);
    }
}
