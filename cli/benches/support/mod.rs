//! What the cli's benchmarks share: the built binary, the demo's image, medians.

#![allow(dead_code, clippy::unwrap_used)] // each bench uses part of it

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub(crate) fn cairn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
}

/// Runs `command`, which must succeed.
pub(crate) fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Wall seconds of `command`, which must succeed.
pub(crate) fn timed(command: &mut Command) -> f64 {
    let started = Instant::now();
    run(command);
    started.elapsed().as_secs_f64()
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The arguments after the bench name: SIZE (default 1G) and ROUNDS (default 3). Run by
/// `cargo test --benches` (no `--bench` flag, as criterion tells its test mode), a smoke run:
/// 16M, one round.
pub(crate) fn size_and_rounds() -> (String, usize) {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let smoke = !all.iter().any(|a| a == "--bench");
    let args: Vec<&String> = all.iter().filter(|a| !a.starts_with("--")).collect();
    let default_size = if smoke { "16M" } else { "1G" };
    let size = args.first().map_or(default_size, |s| s.as_str()).to_owned();
    let rounds = args
        .get(1)
        .map_or(if smoke { 1 } else { 3 }, |r| r.parse().unwrap());
    (size, rounds)
}

/// A scratch folder (under `CAIRN_BENCH_DIR` if set).
pub(crate) fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(
        std::env::var_os("CAIRN_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
    )
    .unwrap()
}

/// The demo's mixed sample image of `size` in `work`; its path and length.
pub(crate) fn demo_image(work: &Path, size: &str) -> (PathBuf, u64) {
    println!("making the {size} demo image");
    run(cairn()
        .args(["demo", "-q", "--size", size, "--keep"])
        .arg(work.join("demo")));
    let image = work.join("sample.img");
    std::fs::rename(work.join("demo/sample.img"), &image).unwrap();
    std::fs::remove_dir_all(work.join("demo")).unwrap();
    let bytes = std::fs::metadata(&image).unwrap().len();
    (image, bytes)
}
