//! Devices on the I/O port bus: the 16550 serial console (vm-superio) on COM1 with its
//! interrupt on IRQ 4 through an irqfd, the i8042 controller whose CPU-reset command ends
//! the VM, and the CMOS clock. Reads of ports nobody claims return all ones; writes to them are dropped (the
//! kernel probes and pokes legacy ports, port 0x80 for delays).

use std::io::Write;
use std::sync::{Mutex, MutexGuard};

pub mod cmos;
pub mod i8042;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// An eventfd as vm-superio's interrupt or reset line.
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// A device's lock, even if a vCPU thread panicked holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const COM1: u16 = 0x3f8;
const I8042: u16 = 0x60;

/// The legacy devices of one VM.
pub struct Legacy {
    serial: Mutex<Serial<EventFdTrigger, vm_superio::serial::NoEvents, Box<dyn Write + Send>>>,
    i8042: Mutex<i8042::I8042<EventFdTrigger>>,
    cmos: Mutex<cmos::Cmos>,
}

impl Legacy {
    /// `irq4` is signalled when the serial port raises its interrupt, `reset` when the guest
    /// resets the CPU; the console's output goes to `out`.
    pub fn new(irq4: EventFd, reset: EventFd, out: Box<dyn Write + Send>) -> Self {
        Legacy {
            serial: Mutex::new(Serial::new(EventFdTrigger(irq4), out)),
            i8042: Mutex::new(i8042::I8042::new(EventFdTrigger(reset))),
            cmos: Mutex::new(cmos::Cmos::new()),
        }
    }

    pub fn read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        if data.len() != 1 {
            return;
        }
        match port {
            COM1..=0x3ff => data[0] = lock(&self.serial).read((port - COM1) as u8),
            0x60 | 0x64 => data[0] = lock(&self.i8042).read((port - I8042) as u8),
            0x70 | 0x71 => data[0] = lock(&self.cmos).read((port - 0x70) as u8),
            _ => {}
        }
    }

    /// A port write; `Some` when the guest ended the machine through ACPI (the sleep control
    /// register with S5: poweroff; the reset register: reset).
    pub fn write(&self, port: u16, data: &[u8]) -> Option<crate::Exit> {
        use crate::arch::acpi;
        if data.len() != 1 {
            return None;
        }
        match port {
            acpi::SLEEP_CONTROL_PORT if data[0] == acpi::SLP_EN | (acpi::S5_TYPE << 2) => {
                return Some(crate::Exit::Poweroff)
            }
            acpi::RESET_PORT if data[0] == acpi::RESET_VALUE => return Some(crate::Exit::Reset),
            COM1..=0x3ff => {
                let _ = lock(&self.serial).write((port - COM1) as u8, data[0]);
            }
            0x60 | 0x64 => lock(&self.i8042).write((port - I8042) as u8, data[0]),
            0x70 | 0x71 => lock(&self.cmos).write((port - 0x70) as u8, data[0]),
            _ => {}
        }
        None
    }

    /// How many input bytes the guest can take now: none until a program has the port open
    /// — data terminal ready and OUT2 (the PC's interrupt gate) set, not in loopback, the
    /// receive interrupt enabled. (The driver's probe toggles these registers and resets the
    /// FIFO: bytes sent then would be lost.)
    pub fn input_room(&self) -> usize {
        let s = lock(&self.serial);
        let st = s.state();
        let open = st.modem_control & 0x19 == 0x09 && st.interrupt_enable & 1 != 0;
        if !open {
            return 0;
        }
        s.fifo_capacity()
    }

    /// Bytes typed on the console, for the guest to read.
    pub fn input(&self, bytes: &[u8]) {
        let _ = lock(&self.serial).enqueue_raw_bytes(bytes);
    }

    pub fn flush(&self) {
        let _ = lock(&self.serial).writer_mut().flush();
    }
}
