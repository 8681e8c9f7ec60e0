//! The CMOS real-time clock at ports 0x70/0x71: the host's UTC time in BCD, 24-hour mode, no
//! update in progress, and 128 bytes of CMOS memory. A guest's RTC driver otherwise waits on
//! an update that never ends.

pub struct Cmos {
    index: u8,
    ram: [u8; 128],
}

fn bcd(v: u64) -> u8 {
    (((v / 10) << 4) | (v % 10)) as u8
}

/// (year, month, day) of the civil date `days` after 1970-01-01.
fn civil(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl Default for Cmos {
    fn default() -> Self {
        Self::new()
    }
}

impl Cmos {
    pub fn new() -> Self {
        Cmos {
            index: 0,
            ram: [0; 128],
        }
    }

    fn register(&self, r: u8) -> u8 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let days = (now / 86_400) as i64;
        let secs = now % 86_400;
        let (y, m, d) = civil(days);
        match r {
            0x00 => bcd(secs % 60),
            0x02 => bcd(secs / 60 % 60),
            0x04 => bcd(secs / 3600),
            0x06 => bcd(((days + 4).rem_euclid(7) + 1) as u64), // 1970-01-01 was a Thursday
            0x07 => bcd(d),
            0x08 => bcd(m),
            0x09 => bcd((y % 100) as u64),
            0x32 => bcd((y / 100) as u64),
            0x0a => 0x26, // 32.768 kHz, 1024 Hz; no update in progress
            0x0b => 0x02, // 24-hour, BCD
            0x0c => 0x00,
            0x0d => 0x80, // the battery is fine
            r => self.ram[r as usize & 0x7f],
        }
    }

    /// Port 0x70 (`offset` 0) or 0x71 (`offset` 1).
    pub fn read(&mut self, offset: u8) -> u8 {
        if offset == 1 {
            self.register(self.index)
        } else {
            0xff
        }
    }

    pub fn write(&mut self, offset: u8, value: u8) {
        match offset {
            0 => self.index = value & 0x7f, // bit 7 masks NMIs
            1 => self.ram[self.index as usize] = value,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_registers() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(20_517), (2026, 3, 5));
        let mut c = Cmos::new();
        c.write(0, 0x8d);
        assert_eq!(c.read(1), 0x80);
        c.write(0, 0x0a);
        assert_eq!(c.read(1) & 0x80, 0, "no update in progress");
        c.write(0, 0x08);
        let m = c.read(1);
        assert!((0x01..=0x12).contains(&m), "{m:#x}");
        c.write(0, 0x40);
        c.write(1, 7);
        assert_eq!(c.read(1), 7);
    }
}
