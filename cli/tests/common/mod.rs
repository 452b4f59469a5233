//! What the command tests share: running the built binary, real files, real tools.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::panic)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test: this build's, or the one `CAIRN_TEST_BINARY` names (to run these
/// tests against another build of cairn, an older one say).
pub fn binary() -> PathBuf {
    std::env::var_os("CAIRN_TEST_BINARY")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cairn")), PathBuf::from)
}

/// Runs `cairn` with `args` to completion.
pub fn cairn(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .output()
        .expect("run cairn")
}

/// A `cairn` command to start by hand.
pub fn cairn_command(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.args(args);
    command
}

/// `output`, after asserting it succeeded.
pub fn ok(output: &Output) -> &Output {
    assert!(
        output.status.success(),
        "cairn failed ({:?}): {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Asserts `output` failed with `code` and one line on stderr containing `words`; returns it.
pub fn failed_with(output: &Output, code: i32, words: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(words), "expected `{words}` in: {stderr}");
    stderr
}

pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `len` bytes of the kernel's random numbers.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes
}

/// An image of random runs, a zero run and a repeat: `megabytes` MiB and a bit.
pub fn mixed_image(megabytes: usize) -> Vec<u8> {
    let mut data = random_bytes(megabytes << 19);
    data.extend(std::iter::repeat_n(0u8, 3 << 20));
    let repeat = data[..1 << 20].to_vec();
    data.extend(&repeat);
    data.extend(random_bytes((megabytes << 19) + 12_345));
    data
}

/// Backs `data` up into a PBS datastore `ds` in `dir` (1 MiB chunks) as `name.fidx`.
pub fn backed_up(dir: &Path, name: &str, data: &[u8]) -> (PathBuf, PathBuf) {
    let input = dir.join(format!("{name}.img"));
    std::fs::write(&input, data).unwrap();
    let store = dir.join("ds");
    let index = dir.join(format!("{name}.fidx"));
    backup(&store, &input, &index);
    (store, index)
}

/// `cairn backup --store STORE --chunk-size 1M INPUT INDEX`, which must succeed; returns its
/// summary line.
pub fn backup(store: &Path, input: &Path, index: &Path) -> String {
    let out = cairn(&[
        "backup",
        "--store",
        s(store),
        "--chunk-size",
        "1M",
        s(input),
        s(index),
    ]);
    String::from_utf8_lossy(&ok(&out).stderr).into_owned()
}

/// `cairn restore -q --store STORE INDEX OUTPUT`, which must succeed.
pub fn restore(store: &Path, index: &Path, output: &Path) {
    ok(&cairn(&[
        "restore",
        "-q",
        "--store",
        s(store),
        s(index),
        s(output),
    ]));
}

/// The path of `name` on the `PATH`, if it is there. Without it the caller skips, unless
/// `CAIRN_REQUIRE_INTEROP` is set (as `cargo xtask ci` sets it), which makes it a failure.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    });
    if found.is_none() {
        required(&format!("{name} is not installed"));
    }
    found
}

/// Notes that a test cannot run here: a failure when `CAIRN_REQUIRE_INTEROP` is set.
pub fn required(why: &str) {
    assert!(
        std::env::var_os("CAIRN_REQUIRE_INTEROP").is_none(),
        "{why}, and CAIRN_REQUIRE_INTEROP demands it"
    );
    eprintln!("note: {why}; skipping");
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Names in `dir` (not recursive), sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Temporary files anywhere under `dir`: cairn's (`.tmp`, `.tmp_`, `.tmp-`).
pub fn temporaries(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp"))
        .collect()
}

/// A loop device over a file, detached on drop.
pub struct LoopDevice {
    pub device: PathBuf,
}

impl LoopDevice {
    /// Attaches `backing`, or `None` (after [`required`]) where loop devices cannot be made.
    pub fn attach(backing: &Path) -> Option<Self> {
        tool("losetup")?;
        let out = Command::new("losetup")
            .args(["-f", "--show", s(backing)])
            .output()
            .unwrap();
        if !out.status.success() {
            required(&format!(
                "no loop device: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        let device = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        Some(Self { device })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success());
}

/// `casync make --store=STORE INDEX INPUT`, which must succeed.
pub fn casync_make(casync: &Path, store: &Path, index: &Path, input: &Path) {
    let made = std::process::Command::new(casync)
        .arg("make")
        .arg(format!("--store={}", s(store)))
        .arg(index)
        .arg(input)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}
