//! `cairn info` run as a user would: the built binary, real files, exit codes.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cairn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .output()
        .expect("run cairn")
}

fn shared_didx() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/pbs/backup-client-pxar-data.ppxar.didx");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CAIRN_REQUIRE_SHARED").is_none(),
        "the shared PBS test file is missing at {}",
        path.display()
    );
    eprintln!("note: {} is absent; skipping", path.display());
    None
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).expect("stdout is one JSON object")
}

#[test]
fn info_on_the_real_pbs_index() {
    let Some(path) = shared_didx() else { return };
    let path = path.to_str().unwrap();
    let output = cairn(&["info", "--json", path]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let v = json(&output);
    assert_eq!(v["format"], "didx");
    assert_eq!(v["digest"], "sha256");
    assert_eq!(v["size"], 104_859_232);
    assert_eq!(v["chunks"], 100);
    assert_eq!(v["unique_chunks"], 3);
    assert_eq!(v["checksum_ok"], true);
    assert_eq!(v["uuid"], "f0ef7665555e417ea6eba00a375ceee0");
    assert_eq!(v["ctime"], 1_715_091_951);
    assert_eq!(v["largest_run"]["chunks"], 98);
    assert_eq!(v["largest_run"]["first_chunk"], 1);
    let text = cairn(&["info", path]);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("format:         didx"), "{text}");
    assert!(text.contains("2024-05-07T14:25:51Z"), "{text}");
    assert!(text.contains("checksum:       verified"), "{text}");
}

#[test]
fn a_checksum_mismatch_is_reported_and_exits_1() {
    let Some(path) = shared_didx() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    bytes[4096 + 20] ^= 0xff;
    let damaged = dir.path().join("damaged.didx");
    std::fs::write(&damaged, bytes).unwrap();
    let output = cairn(&["info", "--json", damaged.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json(&output)["checksum_ok"], false);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("damaged.didx") && stderr.contains("checksum"),
        "{stderr}"
    );
}

#[test]
fn a_bad_file_gives_one_line_naming_it_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbage.fidx");
    std::fs::write(&bad, vec![0x2f; 100]).unwrap();
    let output = cairn(&["info", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("garbage.fidx") && stderr.contains("magic"),
        "{stderr}"
    );
    let missing = cairn(&["info", "/nonexistent/x.didx"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(cairn(&["info"]).status.code(), Some(2));
    assert_eq!(cairn(&["info", "--bogus", "x"]).status.code(), Some(2));
    assert_eq!(cairn(&[]).status.code(), Some(2));
}

fn casync_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("casync"))
            .find(|c| c.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CAIRN_REQUIRE_INTEROP").is_none(),
            "casync is not installed, and CAIRN_REQUIRE_INTEROP demands it"
        );
        eprintln!("note: casync not found; skipping");
    }
    found
}

fn casync_index(casync: &Path, dir: &Path, args: &[&str], name: &str, data: &[u8]) -> PathBuf {
    let input = dir.join(format!("{name}.raw"));
    std::fs::write(&input, data).unwrap();
    let index = dir.join(format!("{name}.caibx"));
    let status = Command::new(casync)
        .arg("make")
        .args(args)
        .arg(format!("--store={}", dir.join("store.castr").display()))
        .arg(&index)
        .arg(&input)
        .output()
        .unwrap();
    assert!(status.status.success());
    index
}

#[test]
fn info_on_casync_output() {
    let Some(casync) = casync_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB of one repeated 64 KiB block, then zeros: plenty of duplicate chunks.
    let block: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut data: Vec<u8> = block.iter().cycle().take(1 << 20).copied().collect();
    data.extend(std::iter::repeat_n(0u8, 2 << 20));
    for (args, digest) in [
        (&[][..], "sha512-256"),
        (&["--digest=sha256"][..], "sha256"),
    ] {
        let index = casync_index(&casync, dir.path(), args, digest, &data);
        let output = cairn(&["info", "--json", index.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let v = json(&output);
        assert_eq!(v["format"], "caibx");
        assert_eq!(v["digest"], digest);
        assert_eq!(v["size"], data.len() as u64);
        assert!(v["checksum_ok"].is_null());
        assert_eq!(v["chunk_size_avg"], 65_536);
        assert!(v["unique_chunks"].as_u64().unwrap() < v["chunks"].as_u64().unwrap());
        assert!(v["dedup_ratio"].as_f64().unwrap() > 1.5);
    }
}
