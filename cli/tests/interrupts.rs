//! SIGINT and SIGTERM, sent for real to a running `cairn`: it stops, removes this run's
//! temporary files, says so in one line and exits 130 or 143; nothing partial is left under a
//! final name.

#![allow(clippy::unwrap_used, clippy::panic)] // tests unwrap and panic: a failure is the test failing

mod common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rustix::process::{Pid, Signal, kill_process};

fn send(child: &Child, signal: Signal) {
    let pid = Pid::from_child(child);
    kill_process(pid, signal).unwrap();
}

/// Waits for `child` to exit (at most 30 s) and returns its exit code and stderr.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cairn did not exit within 30 s of the signal");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

/// Polls (every millisecond, for at most 30 s) until `ready` holds while `child` still runs.
fn when(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "cairn finished before {what}, so it could not be interrupted"
        );
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Stops `child` mid-run, sends `signal`, lets it go on: the signal lands while work is in
/// flight, however fast the machine.
fn interrupt_frozen(child: &Child, signal: Signal) {
    send(child, Signal::STOP);
    send(child, signal);
    send(child, Signal::CONT);
}

fn assert_one_line(stderr: &str, words: &str) {
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(words), "expected `{words}` in: {stderr}");
}

/// Every chunk file of the PBS datastore `store` is whole: it decodes to data of its digest.
fn every_chunk_is_whole(store: &Path) -> usize {
    let files = walk(&store.join(".chunks"));
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let plaintext = cairn_chunk_store::decode_blob(&bytes, 4 << 20)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let digest = cairn_chunk_store::DigestAlgorithm::Sha256.digest(&plaintext);
        assert_eq!(
            cairn_chunk_store::to_hex(&digest),
            file.file_name().unwrap().to_str().unwrap()
        );
    }
    files.len()
}

#[test]
fn backup_stops_on_sigint_and_sigterm_leaving_no_index_and_no_temporary() {
    for (signal, code, name) in [(Signal::INT, 130, "SIGINT"), (Signal::TERM, 143, "SIGTERM")] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input");
        mkfifo(&input);
        // The input: 12 MiB, then a pause that lasts until the test is done, so the backup is
        // surely still running when the signal comes.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let feeder = {
            let input = input.clone();
            std::thread::spawn(move || {
                let mut fifo = std::fs::OpenOptions::new().write(true).open(input).unwrap();
                let _ = fifo.write_all(&random_bytes(12 << 20));
                let _ = held.recv();
            })
        };
        let store = dir.path().join("ds");
        let index = dir.path().join("image.fidx");
        let mut child = cairn_command(&[
            "backup",
            "--store",
            s(&store),
            "--chunk-size",
            "1M",
            s(&input),
            s(&index),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        when(&mut child, "the first chunks were stored", || {
            store.join(".chunks").is_dir() && walk(&store.join(".chunks")).len() >= 4
        });
        send(&child, signal);
        let (exit, stderr) = finish(child);
        release.send(()).unwrap();
        feeder.join().unwrap();
        assert_eq!(exit, Some(code), "{stderr}");
        assert_one_line(
            &stderr,
            &format!("interrupted by {name}: no index was written"),
        );
        assert!(!index.exists(), "an index appeared");
        assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
        assert!(every_chunk_is_whole(&store) >= 4);
    }
}

#[test]
fn restore_into_an_existing_file_stops_on_sigint_and_leaves_it_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(128 << 20);
    let (store, index) = backed_up(dir.path(), "image", &data);
    drop(data);
    let output = dir.path().join("existing.img");
    std::fs::write(&output, b"the old contents").unwrap();
    let mut child = cairn_command(&["restore", "--store", s(&store), s(&index), s(&output)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    when(&mut child, "the temporary image appeared", || {
        names(dir.path()).iter().any(|n| n.ends_with(".tmp"))
    });
    interrupt_frozen(&child, Signal::INT);
    let (exit, stderr) = finish(child);
    assert_eq!(exit, Some(130), "{stderr}");
    assert_one_line(
        &stderr,
        "interrupted by SIGINT: the unfinished image was removed",
    );
    assert_eq!(std::fs::read(&output).unwrap(), b"the old contents");
    assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn verify_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(128 << 20);
    let (store, index) = backed_up(dir.path(), "image", &data);
    drop(data);
    let mut child = cairn_command(&["verify", "--store", s(&store), s(&index)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let io = PathBuf::from(format!("/proc/{}/io", child.id()));
    when(&mut child, "verify read 8 MiB of chunks", || {
        std::fs::read_to_string(&io).is_ok_and(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("rchar: "))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n > 8 << 20)
        })
    });
    interrupt_frozen(&child, Signal::TERM);
    let (exit, stderr) = finish(child);
    assert_eq!(exit, Some(143), "{stderr}");
    assert_one_line(&stderr, "interrupted by SIGTERM: ");
    assert!(stderr.contains("before it checked every chunk"), "{stderr}");
}

#[test]
fn cat_and_restore_into_a_stalled_reader_stop_on_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(8 << 20);
    let (store, index) = backed_up(dir.path(), "image", &data);
    // cat into a pipe nobody reads: it fills the pipe and waits.
    let child = cairn_command(&["cat", "--store", s(&store), s(&index)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    send(&child, Signal::INT);
    let (exit, stderr) = finish(child);
    assert_eq!(exit, Some(130), "{stderr}");
    assert_one_line(
        &stderr,
        "interrupted by SIGINT: standard output got part of the image",
    );

    // restore into a FIFO whose reader has stopped reading.
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut pipe = std::fs::File::open(fifo).unwrap();
            let mut first = vec![0u8; 4096];
            pipe.read_exact(&mut first).unwrap();
            std::thread::sleep(Duration::from_secs(2));
            first
        })
    };
    let child = cairn_command(&["restore", "--store", s(&store), s(&index), s(&fifo)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    send(&child, Signal::TERM);
    let (exit, stderr) = finish(child);
    assert_eq!(exit, Some(143), "{stderr}");
    assert_one_line(&stderr, "got part of the image");
    assert!(reader.join().unwrap() == data[..4096]);
    assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
}
