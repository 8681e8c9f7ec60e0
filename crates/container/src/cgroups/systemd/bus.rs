//! systemd's manager over the system bus (org.freedesktop.systemd1): start a container's
//! transient unit, change its properties, stop it. The `dbus` crate (libdbus) blocks and
//! starts no thread, which a runtime that forks and joins namespaces needs.

use std::path::Path;
use std::time::{Duration, Instant};

use dbus::arg::{RefArg, Variant};
use dbus::blocking::{Connection, Proxy};

use super::{Unit, Value};
use crate::error::{Error, Result};

/// How long one call to systemd may take, and how long its unit may take to start.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(30);

type Props = Vec<(String, Variant<Box<dyn RefArg>>)>;

/// A connection to systemd.
pub struct Systemd(Connection);

fn variant(v: &Value) -> Variant<Box<dyn RefArg>> {
    Variant(match v {
        Value::Bool(b) => Box::new(*b),
        Value::U64(n) => Box::new(*n),
        Value::I64(n) => Box::new(*n),
        Value::U32(n) => Box::new(*n),
        Value::I32(n) => Box::new(*n),
        Value::U16(n) => Box::new(*n),
        Value::I16(n) => Box::new(*n),
        Value::Byte(n) => Box::new(*n),
        Value::F64(n) => Box::new(*n),
        Value::Str(s) => Box::new(s.clone()),
        Value::Bytes(b) => Box::new(b.clone()),
        Value::U32s(v) => Box::new(v.clone()),
    })
}

fn props(p: &[(String, Value)]) -> Props {
    p.iter().map(|(k, v)| (k.clone(), variant(v))).collect()
}

fn call_err(what: &str, e: dbus::Error) -> Error {
    Error::Msg(format!(
        "systemd: {what}: {}",
        e.message().unwrap_or(e.name().unwrap_or("failed"))
    ))
}

impl Systemd {
    /// Connect to the system bus (`DBUS_SYSTEM_BUS_ADDRESS`, or /run/dbus/system_bus_socket).
    pub fn connect() -> Result<Systemd> {
        Connection::new_system().map(Systemd).map_err(|e| {
            Error::Msg(format!(
                "--systemd-cgroup: cannot reach systemd on the system bus: {}",
                e.message().unwrap_or("no bus")
            ))
        })
    }

    fn manager(&self) -> Proxy<'_, &Connection> {
        self.0.with_proxy(
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            CALL_TIMEOUT,
        )
    }

    /// Start `unit` for process `pid` with `extra` properties, and wait until systemd has put
    /// the process in it. A scope takes the process itself; for a slice, the caller joins it.
    pub fn start(&self, unit: &Unit, extra: &[(String, Value)], pid: i32, id: &str) -> Result<()> {
        let scope = unit.name.ends_with(".scope");
        let mut p = vec![
            (
                "Description".to_string(),
                Value::Str(format!("cellvisor container {id}")),
            ),
            ("DefaultDependencies".to_string(), Value::Bool(false)),
        ];
        if scope {
            p.push(("Slice".to_string(), Value::Str(unit.slice.clone())));
            p.push(("Delegate".to_string(), Value::Bool(true)));
            p.push(("PIDs".to_string(), Value::U32s(vec![pid as u32])));
        }
        for (k, v) in extra {
            p.retain(|(n, _)| n != k);
            p.push((k.clone(), v.clone()));
        }
        let aux: Vec<(String, Props)> = Vec::new();
        let _job: (dbus::Path,) = self
            .manager()
            .method_call(
                "org.freedesktop.systemd1.Manager",
                "StartTransientUnit",
                (unit.name.as_str(), "replace", props(&p), aux),
            )
            .map_err(|e| call_err(&format!("starting {}", unit.name), e))?;
        let end = Instant::now() + START_TIMEOUT;
        loop {
            match self.active_state(&unit.name).as_deref() {
                Some("active") if !scope || in_cgroup(pid, &unit.path) => return Ok(()),
                Some("failed") => {
                    return Err(Error::Msg(format!(
                        "systemd: {} failed to start (see journalctl -u {})",
                        unit.name, unit.name
                    )))
                }
                _ => {}
            }
            if Instant::now() > end {
                return Err(Error::Msg(format!(
                    "systemd: {} did not start within {} s",
                    unit.name,
                    START_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The unit's ActiveState, when systemd knows it.
    pub fn active_state(&self, name: &str) -> Option<String> {
        use dbus::blocking::stdintf::org_freedesktop_dbus::Properties;
        let (path,): (dbus::Path,) = self
            .manager()
            .method_call("org.freedesktop.systemd1.Manager", "GetUnit", (name,))
            .ok()?;
        self.0
            .with_proxy("org.freedesktop.systemd1", path, CALL_TIMEOUT)
            .get("org.freedesktop.systemd1.Unit", "ActiveState")
            .ok()
    }

    /// Change a running unit's properties (for as long as it runs).
    pub fn set_properties(&self, name: &str, p: &[(String, Value)]) -> Result<()> {
        self.manager()
            .method_call(
                "org.freedesktop.systemd1.Manager",
                "SetUnitProperties",
                (name, true, props(p)),
            )
            .map_err(|e| call_err(&format!("setting {name}'s properties"), e))
    }

    /// Stop the unit (and so end what is left in it); a unit already gone is no error.
    pub fn stop(&self, name: &str) -> Result<()> {
        let r: std::result::Result<(dbus::Path,), _> = self.manager().method_call(
            "org.freedesktop.systemd1.Manager",
            "StopUnit",
            (name, "replace"),
        );
        match r {
            Ok(_) => {}
            Err(e) if e.name() == Some("org.freedesktop.systemd1.NoSuchUnit") => return Ok(()),
            Err(e) => return Err(call_err(&format!("stopping {name}"), e)),
        }
        // Until it is gone: a unit being stopped still holds its cgroup.
        let end = Instant::now() + START_TIMEOUT;
        while let Some(s) = self.active_state(name) {
            if s == "inactive" || s == "failed" || Instant::now() > end {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

/// Whether `/proc/PID/cgroup` shows the process in `path` (in any hierarchy: systemd's own
/// on v1, the unified one on v2).
fn in_cgroup(pid: i32, path: &Path) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .any(|p| Path::new(p) == path)
}
