//! Backups are durable and safe beside PBS's garbage collection; verify checks every length of
//! a digest; chunkers that would make unstorable chunks are usage errors. The sync calls are
//! watched, and failed, with the real strace.

#![allow(clippy::unwrap_used, clippy::panic)] // tests unwrap and panic: a failure is the test failing

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use cairn_index::ChunkIndex as _;
use common::*;

/// Runs `cairn args` under strace, tracing `syscalls` (and injecting `inject`, if any); returns
/// the output and the traced calls, one per line.
fn traced(
    strace: &Path,
    syscalls: &str,
    inject: Option<&str>,
    args: &[&str],
) -> (std::process::Output, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let mut command = Command::new(strace);
    command.args([
        "-f",
        "-qq",
        "-o",
        s(&log),
        "-e",
        &format!("trace={syscalls}"),
    ]);
    if let Some(inject) = inject {
        command.args(["-e", inject]);
    }
    let out = command.arg(binary()).args(args).output().unwrap();
    let calls = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("resumed>"))
        .map(str::to_owned)
        .collect();
    (out, calls)
}

fn position(calls: &[String], what: &str) -> Option<usize> {
    calls.iter().position(|c| c.contains(what))
}

fn count(calls: &[String], call: &str) -> usize {
    calls
        .iter()
        .filter(|c| {
            c.split_whitespace()
                .nth(1)
                .is_some_and(|w| w.starts_with(call))
        })
        .count()
}

const SYNC_CALLS: &str = "syncfs,fsync,fdatasync,rename,renameat,renameat2";

#[test]
fn the_store_is_synced_before_the_index_appears() {
    let Some(strace) = tool("strace") else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("image.img");
    std::fs::write(&input, mixed_image(6)).unwrap();
    let store = dir.path().join("ds");
    let index = dir.path().join("image.fidx");
    let args = |sync: &'static str, index: &Path| -> Vec<String> {
        [
            "backup",
            "-q",
            "--sync",
            sync,
            "--store",
            s(&store),
            "--chunk-size",
            "1M",
            s(&input),
            s(index),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let run = |sync: &'static str, index: &Path| {
        let args = args(sync, index);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        traced(&strace, SYNC_CALLS, None, &args)
    };

    // The default, filesystem: one syncfs, and it comes before the index's rename.
    let (out, calls) = run("filesystem", &index);
    ok(&out);
    assert_eq!(count(&calls, "syncfs"), 1, "{calls:#?}");
    let synced = position(&calls, "syncfs(").unwrap();
    let renamed = position(&calls, "image.fidx\")").expect("the index's rename");
    assert!(
        synced < renamed,
        "syncfs must come before the index's rename: {calls:#?}"
    );

    // file: every new chunk file and its folder fsynced, each before the index; no syncfs.
    let new_chunks = |out: &std::process::Output| -> usize {
        let summary = String::from_utf8_lossy(&out.stderr).into_owned();
        summary
            .split(" new;")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count of new chunks in: {summary}"))
    };
    let store_file = dir.path().join("ds-file");
    let file_index = dir.path().join("file.fidx");
    let file_args = [
        "backup",
        "--sync",
        "file",
        "--store",
        s(&store_file),
        "--chunk-size",
        "1M",
        s(&input),
        s(&file_index),
    ];
    let (out, calls) = traced(&strace, SYNC_CALLS, None, &file_args);
    ok(&out);
    let new = new_chunks(&out);
    assert!(new >= 8, "{new}");
    assert_eq!(count(&calls, "syncfs"), 0, "{calls:#?}");
    // Per new chunk: its file and its prefix folder; plus each new prefix folder's parent,
    // and the index and its folder.
    assert!(
        count(&calls, "fsync") >= 2 * new + 2,
        "{new} new chunks: {calls:#?}"
    );
    let last_fsync = calls.iter().rposition(|c| c.contains("fsync(")).unwrap();
    let renamed = position(&calls, "file.fidx\")").unwrap();
    assert!(
        renamed < last_fsync,
        "the folder of the index is synced after its rename"
    );

    // none: no syncfs, and only the index and its folder are fsynced.
    let (out, calls) = run("none", &dir.path().join("none.fidx"));
    ok(&out);
    assert_eq!(count(&calls, "syncfs"), 0, "{calls:#?}");
    assert_eq!(count(&calls, "fsync"), 2, "{calls:#?}");
}

#[test]
fn a_failed_sync_fails_the_backup_and_no_index_appears() {
    let Some(strace) = tool("strace") else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("image.img");
    std::fs::write(&input, mixed_image(4)).unwrap();
    for (sync, inject, words) in [
        ("filesystem", "inject=syncfs:error=EIO", "cannot sync"),
        ("file", "inject=fsync:error=EIO", "cannot write chunk"),
    ] {
        // A store of its own each time, so that every chunk is new and written at this level.
        let store = dir.path().join(format!("ds-{sync}"));
        let index = dir.path().join(format!("{sync}.fidx"));
        let (out, _) = traced(
            &strace,
            SYNC_CALLS,
            Some(inject),
            &[
                "backup",
                "--sync",
                sync,
                "--store",
                s(&store),
                s(&input),
                s(&index),
            ],
        );
        let message = failed_with(&out, 1, words);
        assert!(message.contains("Input/output error"), "{message}");
        assert!(
            !index.exists(),
            "{sync}: an index appeared after a failed sync"
        );
        assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new(), "{sync}");
    }
}

fn age_all(files: &[PathBuf], days: u64) {
    let then = SystemTime::now() - Duration::from_secs(days * 86_400);
    for file in files {
        std::fs::File::options()
            .write(true)
            .open(file)
            .unwrap()
            .set_times(
                std::fs::FileTimes::new()
                    .set_accessed(then)
                    .set_modified(then),
            )
            .unwrap();
    }
}

#[test]
fn a_backup_that_reuses_old_chunks_marks_them_used_for_pbs_garbage_collection() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(4);
    let (store, _) = backed_up(dir.path(), "first", &data);
    let chunks = walk(&store.join(".chunks"));
    assert!(chunks.len() >= 4);
    // As if the chunks were written days ago: PBS's garbage collection would sweep them (its
    // cutoff is a day and five minutes) unless a new backup touches them.
    age_all(&chunks, 3);
    let second = dir.path().join("second.fidx");
    let summary = backup(&store, &dir.path().join("first.img"), &second);
    assert!(summary.contains(" 0 new"), "{summary}");
    let cutoff = SystemTime::now() - Duration::from_secs(86_400 + 300);
    for chunk in &chunks {
        let meta = std::fs::metadata(chunk).unwrap();
        assert!(
            meta.accessed().unwrap() > cutoff,
            "{}: still looks unused to garbage collection",
            chunk.display()
        );
        assert!(
            meta.modified().unwrap() < cutoff,
            "the modification time is left alone"
        );
    }
}

#[test]
fn a_torn_chunk_file_is_rewritten_by_the_next_backup() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(4);
    let (store, index) = backed_up(dir.path(), "image", &data);
    let mut chunks = walk(&store.join(".chunks"));
    chunks.sort();
    // One chunk cut to nothing, one cut inside its header, as a crash can leave them.
    std::fs::write(&chunks[0], b"").unwrap();
    let header = std::fs::read(&chunks[1]).unwrap()[..5].to_vec();
    std::fs::write(&chunks[1], header).unwrap();
    let again = dir.path().join("again.fidx");
    let summary = backup(&store, &dir.path().join("image.img"), &again);
    assert!(summary.contains(" 2 new"), "{summary}");
    let restored = dir.path().join("restored.img");
    restore(&store, &index, &restored);
    assert!(std::fs::read(&restored).unwrap() == data);
    ok(&cairn(&["verify", "--store", s(&store), s(&index)]));
}

#[test]
fn verify_checks_every_length_a_digest_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let (store, index) = backed_up(dir.path(), "image", &random_bytes(100_000));
    let digest = cairn_index::Index::open(&index)
        .unwrap()
        .chunk(0)
        .unwrap()
        .digest;
    // One digest at two lengths: bytes 0..100000 (right) and 100000..150000 (wrong).
    let twice = dir.path().join("twice.didx");
    let mut writer = cairn_index::DynamicIndexWriter::create(&twice).unwrap();
    writer.push(100_000, &digest).unwrap();
    writer.push(150_000, &digest).unwrap();
    writer.finish().unwrap().commit().unwrap();
    let restore = cairn(&[
        "restore",
        "--store",
        s(&store),
        s(&twice),
        s(&dir.path().join("out.img")),
    ]);
    failed_with(&restore, 1, "100000");
    let verify = cairn(&["verify", "--json", "--store", s(&store), s(&twice)]);
    assert_eq!(verify.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    let bad = report["indexes"][0]["bad_chunks"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{report}");
    assert_eq!(bad[0]["problem"], "wrong-length");
    assert_eq!(bad[0]["ranges"], serde_json::json!([[100_000, 150_000]]));
    assert_eq!(report["indexes"][0]["unique_chunks"], 2);
}

#[test]
fn chunk_sizes_over_the_128_mib_limit_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("ds");
    let input = dir.path().join("in.img");
    std::fs::write(&input, b"data").unwrap();
    for (format, size, chunker) in [
        ("didx", "64M", "PBS chunker"),
        ("didx", "1G", "PBS chunker"),
        ("fidx", "256MiB", "fixed chunker"),
    ] {
        let index = dir.path().join("out.idx");
        let out = cairn(&[
            "backup",
            "--store",
            s(&store),
            "--format",
            format,
            "--chunk-size",
            size,
            s(&input),
            s(&index),
        ]);
        let message = failed_with(&out, 2, chunker);
        assert!(message.contains("134217728 (128 MiB)"), "{message}");
        assert!(!message.contains("<index in memory>"), "{message}");
        assert!(
            !store.exists() && !index.exists(),
            "refused before anything was created"
        );
        assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
    }
}

#[test]
fn a_new_key_file_appears_whole_and_its_folder_is_synced_after() {
    let Some(strace) = tool("strace") else { return };
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("keys");
    std::fs::create_dir(&folder).unwrap();
    let key = folder.join("backup.key");
    let log = dir.path().join("strace.log");
    let out = Command::new(strace)
        .args(["-f", "-qq", "-y", "-o", s(&log)])
        .args(["-e", "trace=fsync,link,linkat,rename,renameat,renameat2"])
        .arg(binary())
        .args(["key", "create", "--kdf", "none", s(&key)])
        .output()
        .unwrap();
    ok(&out);
    let calls: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    // The key is written to a temporary, synced, then linked to its name (never renamed over
    // anything), and the folder that now names it is synced.
    let synced_file = position(&calls, "fsync(").unwrap_or_else(|| panic!("{calls:#?}"));
    let linked = position(&calls, "backup.key\"").unwrap_or_else(|| panic!("{calls:#?}"));
    assert!(calls[linked].contains("link"), "{}", calls[linked]);
    let folder_synced = calls
        .iter()
        .position(|c| c.contains("fsync(") && c.contains(&format!("<{}>", folder.display())))
        .unwrap_or_else(|| panic!("the folder is never synced: {calls:#?}"));
    assert!(synced_file < linked && linked < folder_synced, "{calls:#?}");
    assert_eq!(names(&folder), ["backup.key"]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // And an existing key file is never replaced.
    let before = std::fs::read(&key).unwrap();
    let out = cairn(&["key", "create", "--kdf", "none", s(&key)]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&key).unwrap(), before);
    assert_eq!(names(&folder), ["backup.key"]);
}
