//! `cellvisor bench channel --quick` runs end to end and writes its JSON (figures themselves
//! come from full runs, not from tests).

const BIN: &str = env!("CARGO_BIN_EXE_cellvisor");

#[test]
fn bench_channel_smoke() {
    let out = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(BIN)
        .args(["bench", "channel", "-n", "1", "--quick", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("channel.json")).unwrap()).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    // 3 transports × 3 sizes × 1 or 2 placements, every figure positive.
    assert!(rows.len() == 9 || rows.len() == 18, "{}", rows.len());
    for r in rows {
        assert!(r["rtt_us"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(rows
        .iter()
        .any(|r| r["bandwidth_mib_s"].as_f64().is_some_and(|b| b > 0.0)));
}
