//! The `cairn` commands run as a user would: the built binary, real files, exit codes; and
//! interop with the real casync.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{backed_up, cairn, mixed_image, ok, s, walk};

/// 6 MiB with random, repeated and zero regions.
fn sample() -> Vec<u8> {
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect()
    };
    let block = random(300_000);
    let mut data = random(1_500_000);
    data.extend(std::iter::repeat_n(0u8, 2_000_000));
    data.extend(&block);
    data.extend(random(700_000));
    data.extend(&block);
    data.extend(std::iter::repeat_n(0u8, 1_000_000));
    data.extend(random(123_457));
    data
}

fn write_sample(dir: &Path) -> (PathBuf, Vec<u8>) {
    let data = sample();
    let path = dir.join("input.img");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn random_ranges(len: usize) -> Vec<(usize, usize)> {
    let mut state = 77u64;
    (0..12)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let offset = (state >> 20) as usize % (len + 100);
            let length = (state >> 40) as usize % 200_000;
            (offset, length)
        })
        .collect()
}

fn check_reads(store: &str, index: &Path, data: &[u8]) {
    for (offset, length) in random_ranges(data.len()) {
        let out = cairn(&[
            "read",
            "--store",
            store,
            s(index),
            "--offset",
            &offset.to_string(),
            "--length",
            &length.to_string(),
        ]);
        ok(&out);
        let start = offset.min(data.len());
        let end = (offset + length).min(data.len());
        assert!(out.stdout == data[start..end], "read {offset}+{length}");
    }
}

#[test]
fn pbs_backup_restore_cat_and_read_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = write_sample(dir.path());
    let store = dir.path().join("ds");
    for (format, chunk_size) in [("fidx", "1M"), ("didx", "256K")] {
        let index = dir.path().join(format!("image.{format}"));
        ok(&cairn(&[
            "backup",
            "-q",
            "--store",
            s(&store),
            "--format",
            format,
            "--chunk-size",
            chunk_size,
            s(&input),
            s(&index),
        ]));
        assert!(
            store.join(".chunks").is_dir(),
            "a new plain path becomes a PBS datastore"
        );
        let restored = dir.path().join(format!("restored-{format}.img"));
        ok(&cairn(&[
            "restore",
            "-q",
            "--store",
            s(&store),
            s(&index),
            s(&restored),
        ]));
        assert!(
            std::fs::read(&restored).unwrap() == data,
            "{format}: restore differs"
        );
        let cat = cairn(&["cat", "--store", &format!("pbs:{}", s(&store)), s(&index)]);
        assert!(ok(&cat).stdout == data, "{format}: cat differs");
        let to_stdout = cairn(&["restore", "-q", "--store", s(&store), s(&index), "-"]);
        assert!(ok(&to_stdout).stdout == data);
        check_reads(s(&store), &index, &data);
        let verify = cairn(&["verify", "--store", s(&store), s(&index)]);
        assert!(String::from_utf8_lossy(&ok(&verify).stdout).contains(": ok ("));
    }
    // The second backup of the same data stores nothing new.
    let again = cairn(&[
        "backup",
        "--store",
        s(&store),
        "--format",
        "fidx",
        "--chunk-size",
        "1M",
        s(&input),
        s(&dir.path().join("again.fidx")),
    ]);
    let summary = String::from_utf8_lossy(&ok(&again).stderr).into_owned();
    assert!(summary.contains(" 0 new"), "{summary}");
}

#[test]
fn damaged_chunks_fail_with_exit_1_naming_them_and_verify_reports_all() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = write_sample(dir.path());
    let store = dir.path().join("ds");
    let index = dir.path().join("image.fidx");
    ok(&cairn(&[
        "backup",
        "-q",
        "--store",
        s(&store),
        "--chunk-size",
        "512K",
        s(&input),
        s(&index),
    ]));
    let info = cairn(&["info", "--json", s(&index)]);
    let described: serde_json::Value = serde_json::from_slice(&ok(&info).stdout).unwrap();
    assert_eq!(described["format"], "fidx", "{described}");
    // Pick three distinct non-zero chunks from the datastore.
    let mut chunk_files: Vec<PathBuf> = walk(&store.join(".chunks"));
    chunk_files.sort();
    let zero = hex(&sha256(&vec![0u8; 512 * 1024]));
    chunk_files.retain(|p| p.file_name().unwrap().to_str().unwrap() != zero);
    assert!(chunk_files.len() >= 3);
    let (corrupt, missing, short) = (&chunk_files[0], &chunk_files[1], &chunk_files[2]);
    let mut bytes = std::fs::read(corrupt).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(corrupt, bytes).unwrap();
    std::fs::remove_file(missing).unwrap();
    // A valid blob of the wrong length under the right name.
    let mut blob = vec![0x42, 0xab, 0x38, 0x07, 0xbe, 0x83, 0x70, 0xa1];
    blob.extend_from_slice(&crc32(b"short").to_le_bytes());
    blob.extend_from_slice(b"short");
    std::fs::write(short, blob).unwrap();

    let restored = dir.path().join("out.img");
    let restore = cairn(&[
        "restore",
        "-q",
        "--store",
        s(&store),
        s(&index),
        s(&restored),
    ]);
    assert_eq!(restore.status.code(), Some(1));
    let message = String::from_utf8_lossy(&restore.stderr).into_owned();
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains("offset") && message.contains("chunk"),
        "{message}"
    );
    assert!(
        !restored.exists(),
        "a failed restore leaves nothing at OUTPUT"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !leftovers
            .iter()
            .any(|n| n.to_string_lossy().contains(".tmp")),
        "{leftovers:?}"
    );

    // Each damaged chunk alone: a read of it fails naming its digest.
    for (path, word) in [
        (corrupt, "corrupt"),
        (missing, "missing"),
        (short, "bytes, expected"),
    ] {
        let digest = path.file_name().unwrap().to_str().unwrap();
        let offset = find_offset(&index, digest);
        let read = cairn(&[
            "read",
            "--store",
            s(&store),
            s(&index),
            "--offset",
            &offset.to_string(),
            "--length",
            "10",
        ]);
        assert_eq!(read.status.code(), Some(1));
        let message = String::from_utf8_lossy(&read.stderr).into_owned();
        assert!(
            message.contains(digest) && message.contains(word),
            "{word}: {message}"
        );
        assert!(message.contains(&format!("offset {offset}")), "{message}");
    }

    let verify = cairn(&["verify", "--json", "--store", s(&store), s(&index)]);
    assert_eq!(verify.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let bad = report["indexes"][0]["bad_chunks"].as_array().unwrap();
    let mut problems: Vec<&str> = bad.iter().map(|b| b["problem"].as_str().unwrap()).collect();
    problems.sort_unstable();
    assert_eq!(problems, ["corrupt", "missing", "wrong-length"]);
    assert!(
        bad.iter()
            .all(|b| !b["ranges"].as_array().unwrap().is_empty())
    );
    let text = cairn(&["verify", "--store", s(&store), s(&index)]);
    assert_eq!(text.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&text.stdout)
            .lines()
            .filter(|l| l.contains("chunk "))
            .count(),
        3
    );
}

fn find_offset(index: &Path, digest: &str) -> u64 {
    let bytes = std::fs::read(index).unwrap();
    let chunk_size = u64::from_le_bytes(bytes[72..80].try_into().unwrap());
    let position = bytes[4096..]
        .chunks(32)
        .position(|d| hex(d) == digest)
        .unwrap();
    position as u64 * chunk_size + 7
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).to_vec()
}

fn crc32(data: &[u8]) -> u32 {
    // IEEE CRC-32, bitwise: small and independent of the code under test.
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn usage_errors_exit_2() {
    for (args, words) in [
        (
            &["backup", "--store", "s3x:bucket", "a", "b"][..],
            "unknown store kind `s3x:`",
        ),
        (
            &["backup", "--store", "x", "--format", "zip", "a", "b"],
            "invalid value 'zip'",
        ),
        (
            &["backup", "--store", "x", "--chunk-size", "3000", "a", "b"],
            "fixed chunker: chunk size 3000 is not a power of two",
        ),
        (
            &["backup", "--store", "x", "--sync", "sometimes", "a", "b"],
            "invalid value 'sometimes'",
        ),
        (&["restore", "--store", "x"], "required"),
        (&["frobnicate"], "unrecognized subcommand"),
    ] {
        let out = cairn(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(words),
            "{args:?}: expected `{words}` in {stderr}"
        );
    }
}

#[test]
fn a_missing_store_or_index_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = cairn(&[
        "restore",
        "--store",
        s(&dir.path().join("nope")),
        "x.fidx",
        s(&dir.path().join("o")),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_demo_runs_and_checks_itself() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("demo");
    let out = cairn(&["demo", "--size", "24M", "--keep", s(&keep)]);
    let text = String::from_utf8_lossy(&ok(&out).stdout).into_owned();
    assert_eq!(text.matches("sha256 matches").count(), 2, "{text}");
    assert!(
        text.contains("reads/s") && text.contains("coalesced"),
        "{text}"
    );
    assert!(keep.join("sample.fidx").is_file() && keep.join("sample.caibx").is_file());
}

fn casync() -> Option<PathBuf> {
    common::tool("casync")
}

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        command,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn casync_make_then_cairn_restore_and_read() {
    let Some(casync) = casync() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = write_sample(dir.path());
    for (name, args) in [
        ("default", vec![]),
        ("sha256", vec!["--digest=sha256"]),
        ("xz", vec!["--compression=xz"]),
        ("gzip", vec!["--compression=gzip"]),
    ] {
        let store = dir.path().join(format!("{name}.castr"));
        let index = dir.path().join(format!("{name}.caibx"));
        run(Command::new(&casync)
            .arg("make")
            .args(&args)
            .arg(format!("--store={}", s(&store)))
            .arg(&index)
            .arg(&input));
        let restored = dir.path().join(format!("{name}.img"));
        ok(&cairn(&[
            "restore",
            "-q",
            "--store",
            s(&store),
            s(&index),
            s(&restored),
        ]));
        assert!(
            std::fs::read(&restored).unwrap() == data,
            "{name}: cairn restore differs"
        );
        check_reads(&format!("castr:{}", s(&store)), &index, &data);
    }
}

#[test]
fn cairn_backup_caibx_then_casync_extract_and_identical_chunks() {
    let Some(casync) = casync() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = write_sample(dir.path());
    for (name, extra) in [("default", vec![]), ("avg16k", vec!["--chunk-size", "16K"])] {
        let store = dir.path().join(format!("{name}.castr"));
        let ours = dir.path().join(format!("{name}-cairn.caibx"));
        let mut args = vec!["backup", "-q", "--store", s(&store), "--format", "caibx"];
        args.extend(&extra);
        args.extend([s(&input), s(&ours)]);
        ok(&cairn(&args));
        assert!(
            !store.join(".chunks").exists(),
            "a new store for caibx is a castr store"
        );
        let extracted = dir.path().join(format!("{name}-extracted.img"));
        run(Command::new(&casync)
            .arg("extract")
            .arg(format!("--store={}", s(&store)))
            .arg(&ours)
            .arg(&extracted));
        assert!(
            std::fs::read(&extracted).unwrap() == data,
            "{name}: casync extract differs"
        );
        // casync make on the same input lists the same chunks.
        let theirs = dir.path().join(format!("{name}-casync.caibx"));
        let mut make = Command::new(&casync);
        make.arg("make")
            .arg(format!("--store={}", s(&dir.path().join("their.castr"))));
        if name == "avg16k" {
            make.arg("--chunk-size=16384");
        }
        run(make.arg(&theirs).arg(&input));
        let table = |p: &Path| {
            let bytes = std::fs::read(p).unwrap();
            bytes[0x30..bytes.len() - 40].to_vec()
        };
        assert!(
            table(&ours) == table(&theirs),
            "{name}: chunk lists differ from casync make's"
        );
    }
}

#[test]
fn every_reading_command_takes_the_same_cache_size_option() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(4);
    let (store, index) = backed_up(dir.path(), "disk", &data);
    let restored = dir.path().join("restored.img");
    ok(&cairn(&[
        "restore",
        "-q",
        "--store",
        s(&store),
        "--cache-size",
        "1MiB",
        s(&index),
        s(&restored),
    ]));
    assert!(std::fs::read(&restored).unwrap() == data);
    let out = ok(&cairn(&[
        "cat",
        "--store",
        s(&store),
        "--cache-size",
        "2M",
        s(&index),
    ]))
    .stdout
    .clone();
    assert!(out == data);
    let out = cairn(&[
        "read",
        "--store",
        s(&store),
        "--cache-size",
        "64K",
        "--offset",
        "1M",
        "--length",
        "4K",
        s(&index),
    ]);
    assert!(ok(&out).stdout == data[1 << 20..(1 << 20) + 4096]);
    for command in ["restore", "cat", "read", "serve-nbd"] {
        let out = cairn(&[
            command,
            "--store",
            s(&store),
            "--cache-size",
            "lots",
            s(&index),
        ]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("`lots` is not a size"), "{command}: {said}");
    }
}
