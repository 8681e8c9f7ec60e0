//! The systemd cgroup driver (`--systemd-cgroup`), as runc and crun have it: the container's
//! cgroup is a transient unit that systemd creates and owns — a scope `PREFIX-NAME.scope` in
//! `SLICE` for a `cgroupsPath` of `SLICE:PREFIX:NAME` (or a slice, when NAME is one) — with
//! `Delegate=yes`, the container's process in it, and its resources as the unit's properties,
//! so that systemd neither fights over the group nor resets its limits. What systemd has no
//! property for (device rules, cpuset on v1, hugetlb, a real-time budget, ...) is then
//! written to the cgroup files, as with the cgroupfs driver.
//!
//! This module is the pure part — the path, the unit, the properties — and [`bus`] talks to
//! systemd over D-Bus.

pub mod bus;

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::LinuxResources;

/// systemd's "infinity" for a limit.
pub const INFINITY: u64 = u64::MAX;

/// The transient unit of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The slice it goes in (`system.slice`), or, for a slice unit, its parent slice.
    pub slice: String,
    /// `PREFIX-NAME.scope`, or `NAME` when that is a `.slice`.
    pub name: String,
    /// Its cgroup, relative to each hierarchy's root.
    pub path: PathBuf,
}

/// A D-Bus value of a unit property (the types systemd's properties take).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    U64(u64),
    I64(i64),
    U32(u32),
    I32(i32),
    U16(u16),
    I16(i16),
    Byte(u8),
    F64(f64),
    Str(String),
    /// `ay`: a CPU or memory-node mask.
    Bytes(Vec<u8>),
    /// `au`: process ids.
    U32s(Vec<u32>),
}

/// A unit's properties, in order.
pub type Properties = Vec<(String, Value)>;

/// Parse a `cgroupsPath` in systemd form for container `id`: `SLICE:PREFIX:NAME`, every part
/// optional but the colons (an empty slice is `system.slice`, an empty name the id); no
/// path at all is `system.slice:cellvisor:ID`.
pub fn unit_of(cgroups_path: Option<&str>, id: &str) -> Result<Unit, String> {
    let raw = cgroups_path.unwrap_or("");
    let (slice, prefix, name) = if raw.is_empty() {
        ("", "cellvisor", "")
    } else {
        let parts: Vec<&str> = raw.split(':').collect();
        let [s, p, n] = parts[..] else {
            return Err(format!(
                "linux.cgroupsPath: {raw:?} is not slice:prefix:name, which the systemd cgroup driver needs"
            ));
        };
        (s, p, n)
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let name = if name.is_empty() { id } else { name };
    for (what, v) in [("slice", slice), ("prefix", prefix), ("name", name)] {
        if v.contains('/') || v == "." || v == ".." {
            return Err(format!(
                "linux.cgroupsPath: {raw:?}: the {what} {v:?} is not a unit name part"
            ));
        }
    }
    let slice_path = expand_slice(slice).map_err(|e| format!("linux.cgroupsPath: {raw:?}: {e}"))?;
    if name.ends_with(".slice") {
        // A slice of its own, within `slice` by systemd's naming: NAME must extend it.
        let path = expand_slice(name).map_err(|e| format!("linux.cgroupsPath: {raw:?}: {e}"))?;
        if !path.starts_with(&slice_path) {
            return Err(format!(
                "linux.cgroupsPath: {raw:?}: the slice {name} is not within {slice}"
            ));
        }
        return Ok(Unit {
            slice: slice.to_string(),
            name: name.to_string(),
            path,
        });
    }
    let unit = if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(Unit {
        slice: slice.to_string(),
        path: slice_path.join(&unit),
        name: unit,
    })
}

/// A slice's cgroup, by systemd's naming: `a-b-c.slice` is `/a.slice/a-b.slice/a-b-c.slice`;
/// `-.slice` is the root.
pub fn expand_slice(slice: &str) -> Result<PathBuf, String> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(format!("{slice:?} is not a slice (NAME.slice)"));
    };
    if stem == "-" {
        return Ok(PathBuf::from("/"));
    }
    if stem.is_empty()
        || stem.starts_with('-')
        || stem.ends_with('-')
        || stem.contains("--")
        || stem.contains('/')
    {
        return Err(format!("{slice:?} is not a valid slice name"));
    }
    let mut path = PathBuf::from("/");
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    Ok(path)
}

/// The annotation prefix whose keys name extra unit properties, as runc reads them.
pub const PROPERTY_ANNOTATION: &str = "org.systemd.property.";

/// The unit's properties for `res`: accounting on, then the limits systemd manages — by
/// their v1 (legacy) or v2 (unified) names — then `org.systemd.property.*` annotations,
/// which replace a property of the same name.
pub fn properties(
    res: Option<&LinuxResources>,
    v2: bool,
    annotations: &HashMap<String, String>,
) -> Result<Properties, String> {
    let mut p: Properties = Vec::new();
    let mut set = |k: &str, v: Value| p.push((k.to_string(), v));
    set("MemoryAccounting", Value::Bool(true));
    set("CPUAccounting", Value::Bool(true));
    set("TasksAccounting", Value::Bool(true));
    set(
        if v2 {
            "IOAccounting"
        } else {
            "BlockIOAccounting"
        },
        Value::Bool(true),
    );
    if let Some(r) = res {
        resource_properties(r, v2, &mut set)?;
    }
    let mut extra: Vec<(&String, &String)> = annotations
        .iter()
        .filter(|(k, _)| k.starts_with(PROPERTY_ANNOTATION))
        .collect();
    extra.sort();
    for (k, v) in extra {
        let name = &k[PROPERTY_ANNOTATION.len()..];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("annotation {k}: {name:?} is not a property name"));
        }
        let value = parse_variant(name, v).map_err(|e| format!("annotation {k}: {e}"))?;
        p.retain(|(n, _)| n != name);
        p.push((name.to_string(), value));
    }
    Ok(p)
}

/// A limit, -1 being none.
fn limit(v: i64) -> u64 {
    if v < 0 {
        INFINITY
    } else {
        v as u64
    }
}

fn resource_properties(
    r: &LinuxResources,
    v2: bool,
    set: &mut impl FnMut(&str, Value),
) -> Result<(), String> {
    if let Some(m) = r.memory() {
        if let Some(l) = m.limit() {
            set(
                if v2 { "MemoryMax" } else { "MemoryLimit" },
                Value::U64(limit(l)),
            );
        }
        if v2 {
            if let Some(low) = m.reservation() {
                set("MemoryLow", Value::U64(limit(low)));
            }
            // OCI's swap is memory+swap; systemd's MemorySwapMax is swap alone.
            match (m.swap(), m.limit()) {
                (Some(s), _) if s < 0 => set("MemorySwapMax", Value::U64(INFINITY)),
                (Some(s), Some(l)) if l >= 0 => {
                    if s < l {
                        return Err(format!(
                            "linux.resources.memory: swap {s} is below the limit {l} (swap counts memory too)"
                        ));
                    }
                    set("MemorySwapMax", Value::U64((s - l) as u64));
                }
                _ => {}
            }
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares().filter(|&s| s > 0) {
            if v2 {
                set("CPUWeight", Value::U64(shares_to_weight(s)));
            } else {
                set("CPUShares", Value::U64(s));
            }
        }
        let period = c.period().filter(|&p| p > 0);
        if let Some(p) = period {
            set("CPUQuotaPeriodUSec", Value::U64(p));
        }
        if let Some(q) = c.quota() {
            set(
                "CPUQuotaPerSecUSec",
                Value::U64(quota_per_sec(q, period.unwrap_or(100_000))),
            );
        }
        if v2 {
            if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
                set("AllowedCPUs", Value::Bytes(mask(cpus)?));
            }
            if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
                set("AllowedMemoryNodes", Value::Bytes(mask(mems)?));
            }
        }
    }
    if let Some(p) = r.pids() {
        let l = p.limit();
        set(
            "TasksMax",
            Value::U64(if l <= 0 { INFINITY } else { l as u64 }),
        );
    }
    if let Some(w) = r.block_io().as_ref().and_then(|b| b.weight()) {
        if v2 {
            set("IOWeight", Value::U64(blkio_to_io_weight(w)));
        } else {
            set("BlockIOWeight", Value::U64(w.into()));
        }
    }
    Ok(())
}

/// cgroup v1 cpu.shares (2..262144) on v2's cpu.weight scale (1..10000), as runc maps it.
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// blkio.weight (10..1000) on io.weight's scale (1..10000), as runc maps it.
pub fn blkio_to_io_weight(w: u16) -> u64 {
    let w = u64::from(w.clamp(10, 1000));
    1 + ((w - 10) * 9999) / 990
}

/// CPU time per second for a quota per period. systemd keeps the quota as a whole percent
/// of a CPU, so a fraction is rounded up to the next 10 ms, as runc does; a negative quota
/// is none.
pub fn quota_per_sec(quota: i64, period: u64) -> u64 {
    if quota < 0 || period == 0 {
        return INFINITY;
    }
    let per_sec = (quota as u64).saturating_mul(1_000_000) / period;
    per_sec.div_ceil(10_000) * 10_000
}

/// A CPU (or node) list as systemd's byte mask: bit `i % 8` of byte `i / 8`.
pub fn mask(list: &str) -> Result<Vec<u8>, String> {
    let valid = list
        .split(',')
        .all(|p| !p.is_empty() && p.split('-').all(|n| n.parse::<u32>().is_ok()));
    if !valid {
        return Err(format!("{list:?} is not a list like \"0-1,3\""));
    }
    let ids = domain::profile::cpu_list(list);
    let Some(&max) = ids.iter().max() else {
        return Ok(Vec::new());
    };
    if max >= 8192 {
        return Err(format!("{list:?} names CPU {max}, beyond 8191"));
    }
    let mut out = vec![0u8; max as usize / 8 + 1];
    for i in ids {
        out[i as usize / 8] |= 1 << (i % 8);
    }
    Ok(out)
}

/// An annotation's value in GVariant text form, as runc reads `org.systemd.property.*`:
/// `true`, `uint64 5`, `@t 5`, `'text'`, ...; a bare integer is an `int32`, or a `uint64`
/// for a property whose name ends in `Sec` (systemd's times, `TimeoutStopUSec=...`).
pub fn parse_variant(name: &str, text: &str) -> Result<Value, String> {
    let t = text.trim();
    let bad = || {
        format!("{text:?} is not a GVariant value cellvisor reads (true, uint64 5, @t 5, 'text')")
    };
    match t {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        _ => {}
    }
    if t.len() >= 2
        && ((t.starts_with('\'') && t.ends_with('\'')) || (t.starts_with('"') && t.ends_with('"')))
    {
        return Ok(Value::Str(t[1..t.len() - 1].to_string()));
    }
    if let Some((ty, v)) = t.split_once(char::is_whitespace) {
        let v = v.trim();
        let num = |_: std::num::ParseIntError| bad();
        return Ok(match ty {
            "uint64" | "@t" => Value::U64(v.parse().map_err(num)?),
            "int64" | "@x" => Value::I64(v.parse().map_err(num)?),
            "uint32" | "@u" => Value::U32(v.parse().map_err(num)?),
            "int32" | "@i" => Value::I32(v.parse().map_err(num)?),
            "uint16" | "@q" => Value::U16(v.parse().map_err(num)?),
            "int16" | "@n" => Value::I16(v.parse().map_err(num)?),
            "byte" | "@y" => Value::Byte(v.parse().map_err(num)?),
            "double" | "@d" => Value::F64(v.parse().map_err(|_| bad())?),
            "@b" => match v {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(bad()),
            },
            "@s" => return parse_variant(name, v),
            _ => return Err(bad()),
        });
    }
    if name.ends_with("Sec") {
        if let Ok(n) = t.parse::<u64>() {
            return Ok(Value::U64(n));
        }
    }
    t.parse::<i32>().map(Value::I32).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_systemd_path_names_a_scope_in_its_slice() {
        let u = unit_of(Some("system.slice:libpod:abc"), "id").unwrap();
        assert_eq!(u.name, "libpod-abc.scope");
        assert_eq!(u.slice, "system.slice");
        assert_eq!(u.path, PathBuf::from("/system.slice/libpod-abc.scope"));
        let u = unit_of(Some("kubepods-besteffort.slice:cri-containerd:x"), "id").unwrap();
        assert_eq!(
            u.path,
            PathBuf::from("/kubepods.slice/kubepods-besteffort.slice/cri-containerd-x.scope")
        );
        // Defaults: the slice, the name, the whole path.
        assert_eq!(unit_of(Some(":p:"), "c1").unwrap().name, "p-c1.scope");
        assert_eq!(unit_of(Some(":p:"), "c1").unwrap().slice, "system.slice");
        assert_eq!(unit_of(None, "c1").unwrap().name, "cellvisor-c1.scope");
        assert_eq!(unit_of(Some("a.slice::n"), "c").unwrap().name, "n.scope");
        // A slice of its own.
        let u = unit_of(Some("a.slice::a-b.slice"), "c").unwrap();
        assert_eq!(
            (u.name.as_str(), u.path.clone()),
            ("a-b.slice", PathBuf::from("/a.slice/a-b.slice"))
        );
    }

    #[test]
    fn bad_systemd_paths_are_one_line() {
        for (p, says) in [
            ("/cellvisor/x", "is not slice:prefix:name"),
            ("a:b", "is not slice:prefix:name"),
            ("system:p:n", "is not a slice"),
            ("a--b.slice:p:n", "not a valid slice name"),
            ("system.slice:p:../x", "not a unit name part"),
            ("a.slice::b.slice", "is not within a.slice"),
        ] {
            let e = unit_of(Some(p), "id").unwrap_err();
            assert!(e.contains(says), "{p}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn resources_become_v1_or_v2_properties() {
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory": {"limit": 67108864, "swap": 134217728, "reservation": 1048576},
                "cpu": {"shares": 1024, "quota": 25000, "period": 100000, "cpus": "0,2-3"},
                "pids": {"limit": 20}, "blockIO": {"weight": 500}}"#,
        )
        .unwrap();
        let get =
            |p: &[(String, Value)], k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let v1 = properties(Some(&r), false, &HashMap::new()).unwrap();
        assert_eq!(get(&v1, "MemoryLimit"), Some(Value::U64(67108864)));
        assert_eq!(get(&v1, "CPUShares"), Some(Value::U64(1024)));
        assert_eq!(get(&v1, "CPUQuotaPerSecUSec"), Some(Value::U64(250_000)));
        assert_eq!(get(&v1, "CPUQuotaPeriodUSec"), Some(Value::U64(100_000)));
        assert_eq!(get(&v1, "TasksMax"), Some(Value::U64(20)));
        assert_eq!(get(&v1, "BlockIOWeight"), Some(Value::U64(500)));
        assert_eq!(get(&v1, "AllowedCPUs"), None);
        assert_eq!(get(&v1, "MemoryMax"), None);
        let v2 = properties(Some(&r), true, &HashMap::new()).unwrap();
        assert_eq!(get(&v2, "MemoryMax"), Some(Value::U64(67108864)));
        assert_eq!(get(&v2, "MemorySwapMax"), Some(Value::U64(67108864)));
        assert_eq!(get(&v2, "MemoryLow"), Some(Value::U64(1048576)));
        assert_eq!(get(&v2, "CPUWeight"), Some(Value::U64(39)));
        assert_eq!(get(&v2, "AllowedCPUs"), Some(Value::Bytes(vec![0b1101])));
        assert_eq!(get(&v2, "IOWeight"), Some(Value::U64(4950)));
        assert_eq!(get(&v2, "IOAccounting"), Some(Value::Bool(true)));
        // -1 and 0 lift a limit.
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory": {"limit": -1}, "pids": {"limit": 0}, "cpu": {"quota": -1}}"#,
        )
        .unwrap();
        let p = properties(Some(&r), true, &HashMap::new()).unwrap();
        assert_eq!(get(&p, "MemoryMax"), Some(Value::U64(INFINITY)));
        assert_eq!(get(&p, "TasksMax"), Some(Value::U64(INFINITY)));
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(Value::U64(INFINITY)));
    }

    #[test]
    fn annotations_add_and_replace_properties() {
        let a: HashMap<String, String> = [
            ("org.systemd.property.TimeoutStopUSec", "uint64 123456789"),
            ("org.systemd.property.CollectMode", "'inactive-or-failed'"),
            ("org.systemd.property.TasksAccounting", "false"),
            ("org.systemd.property.RuntimeMaxUSec", "5000000"),
            ("io.other", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let p = properties(None, false, &a).unwrap();
        let get = |k: &str| {
            p.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("TimeoutStopUSec"), vec![Value::U64(123456789)]);
        assert_eq!(
            get("CollectMode"),
            vec![Value::Str("inactive-or-failed".into())]
        );
        assert_eq!(get("TasksAccounting"), vec![Value::Bool(false)]);
        assert_eq!(get("RuntimeMaxUSec"), vec![Value::U64(5000000)]);
        let bad: HashMap<String, String> = [(
            "org.systemd.property.X".to_string(),
            "uint64 lots".to_string(),
        )]
        .into();
        let e = properties(None, false, &bad).unwrap_err();
        assert!(e.contains("annotation org.systemd.property.X"), "{e}");
    }

    #[test]
    fn variants_parse_as_gvariant_text() {
        assert_eq!(parse_variant("A", "@t 7"), Ok(Value::U64(7)));
        assert_eq!(parse_variant("A", "int64 -7"), Ok(Value::I64(-7)));
        assert_eq!(parse_variant("A", "uint32 7"), Ok(Value::U32(7)));
        assert_eq!(parse_variant("A", "7"), Ok(Value::I32(7)));
        assert_eq!(parse_variant("A", "\"x y\""), Ok(Value::Str("x y".into())));
        assert_eq!(parse_variant("A", "@b true"), Ok(Value::Bool(true)));
        assert_eq!(parse_variant("A", "double 0.5"), Ok(Value::F64(0.5)));
        assert!(parse_variant("A", "[1, 2]").is_err());
        assert!(parse_variant("A", "uint8 1").is_err());
    }

    proptest! {
        #[test]
        fn a_mask_has_exactly_the_listed_bits(ids in proptest::collection::btree_set(0u32..300, 1..20)) {
            let list = ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
            let m = mask(&list).unwrap();
            for i in 0..(m.len() as u32 * 8) {
                let bit = m[i as usize / 8] & (1 << (i % 8)) != 0;
                prop_assert_eq!(bit, ids.contains(&i));
            }
        }

        #[test]
        fn the_quota_is_rounded_up_to_whole_percents(q in 1i64..10_000_000, p in 1_000u64..1_000_000) {
            let got = quota_per_sec(q, p);
            let exact = (q as u64) * 1_000_000 / p;
            prop_assert!(got >= exact && got < exact + 10_000);
            prop_assert_eq!(got % 10_000, 0);
        }

        #[test]
        fn weights_stay_in_range(s in 0u64..1_000_000, w in 0u16..2000) {
            prop_assert!((1..=10_000).contains(&shares_to_weight(s)));
            prop_assert!((1..=10_000).contains(&blkio_to_io_weight(w)));
        }

        #[test]
        fn a_slice_path_ends_in_the_slice(parts in proptest::collection::vec("[a-z0-9]{1,6}", 1..5)) {
            let name = format!("{}.slice", parts.join("-"));
            let p = expand_slice(&name).unwrap();
            prop_assert_eq!(p.components().count(), parts.len() + 1);
            prop_assert_eq!(p.file_name().unwrap().to_string_lossy(), name);
        }
    }
}
