//! `cairn restore` writes where the user points, and only there: block devices, character
//! devices and FIFOs in place; regular files replaced only by a complete image.

#![allow(clippy::unwrap_used, clippy::panic)] // tests unwrap and panic: a failure is the test failing

mod common;

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::process::Stdio;

use common::*;

#[test]
fn a_fifo_is_written_in_place_and_stays_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(4);
    let (store, index) = backed_up(dir.path(), "image", &data);
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::open(fifo)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            got
        })
    };
    restore(&store, &index, &fifo);
    // Checked before waiting for the reader, which would wait forever for a replaced FIFO.
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let got = reader.join().unwrap();
    assert!(got == data, "the FIFO's reader got other bytes");
    assert_eq!(temporaries(dir.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_character_device_is_written_in_place_and_stays_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(2);
    let (store, index) = backed_up(dir.path(), "image", &data);
    // A node of our own for the null device (major 1, minor 3), so nothing system-wide is at
    // stake if this ever regressed.
    let node = dir.path().join("null");
    let made = std::process::Command::new("mknod")
        .args([s(&node), "c", "1", "3"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    if !made.status.success() {
        required("mknod needs root here");
        return;
    }
    restore(&store, &index, &node);
    let meta = std::fs::metadata(&node).unwrap();
    assert!(meta.file_type().is_char_device(), "the node was replaced");
    assert_eq!(meta.rdev(), std::fs::metadata("/dev/null").unwrap().rdev());
    assert_eq!(temporaries(dir.path()), Vec::<std::path::PathBuf>::new());
}

fn device_bytes(device: &std::path::Path, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    std::fs::File::open(device)
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes
}

#[test]
fn a_block_device_is_written_in_place_with_its_zero_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(6);
    let (store, index) = backed_up(dir.path(), "image", &data);
    // A device full of 0xff: zero chunks must be written as zeros, since a device is not known
    // to read as zeros.
    let backing = dir.path().join("disk.raw");
    let garbage = vec![0xffu8; data.len().next_multiple_of(1 << 20) + (2 << 20)];
    std::fs::write(&backing, &garbage).unwrap();
    let Some(disk) = LoopDevice::attach(&backing) else {
        return;
    };
    let out = cairn(&["restore", "--store", s(&store), s(&index), s(&disk.device)]);
    ok(&out);
    let summary = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        summary.contains("0 zero chunks left unwritten"),
        "{summary}"
    );
    assert!(
        std::fs::metadata(&disk.device)
            .unwrap()
            .file_type()
            .is_block_device(),
        "the device node was replaced"
    );
    let written = device_bytes(&disk.device, garbage.len());
    assert!(
        written[..data.len()] == data[..],
        "the device holds other bytes"
    );
    assert!(
        written[data.len()..].iter().all(|&b| b == 0xff),
        "bytes past the image were touched"
    );
    assert!(
        !names(std::path::Path::new("/dev"))
            .iter()
            .any(|n| n.contains("cairn")),
        "a temporary file appeared in /dev"
    );

    // --assume-zeroed leaves zero chunks alone: on the 0xff device they stay 0xff.
    std::fs::write(&backing, &garbage).unwrap();
    drop(disk);
    let disk = LoopDevice::attach(&backing).unwrap();
    ok(&cairn(&[
        "restore",
        "-q",
        "--assume-zeroed",
        "--store",
        s(&store),
        s(&index),
        s(&disk.device),
    ]));
    let written = device_bytes(&disk.device, data.len());
    // mixed_image(6) has 3 MiB of random bytes, then 3 MiB of zeros: chunks 3 to 5.
    let zeros = 3 << 20..6 << 20;
    assert!(data[zeros.clone()].iter().all(|&b| b == 0));
    assert!(
        written[zeros.clone()].iter().all(|&b| b == 0xff),
        "an assumed-zeroed chunk was written"
    );
    assert!(written[..zeros.start] == data[..zeros.start]);
    assert!(written[zeros.end..] == data[zeros.end..]);
}

#[test]
fn a_block_device_smaller_than_the_image_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(4);
    let (store, index) = backed_up(dir.path(), "image", &data);
    let backing = dir.path().join("small.raw");
    std::fs::write(&backing, vec![0xabu8; 2 << 20]).unwrap();
    let Some(disk) = LoopDevice::attach(&backing) else {
        return;
    };
    let out = cairn(&["restore", "--store", s(&store), s(&index), s(&disk.device)]);
    failed_with(&out, 1, "less than the");
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("nothing was written"), "{message}");
    assert!(
        device_bytes(&disk.device, 2 << 20)
            .iter()
            .all(|&b| b == 0xab)
    );
}

#[test]
fn an_existing_file_is_replaced_only_by_a_complete_image_keeping_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(3);
    let (store, index) = backed_up(dir.path(), "image", &data);
    let output = dir.path().join("existing.img");
    std::fs::write(&output, b"the old contents").unwrap();
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o640)).unwrap();

    // A restore that fails midway (a chunk removed) leaves the old file untouched.
    let chunks = walk(&store.join(".chunks"));
    let removed = chunks.last().unwrap();
    let saved = std::fs::read(removed).unwrap();
    std::fs::remove_file(removed).unwrap();
    let out = cairn(&["restore", "-q", "--store", s(&store), s(&index), s(&output)]);
    failed_with(&out, 1, "missing");
    assert_eq!(std::fs::read(&output).unwrap(), b"the old contents");
    assert_eq!(
        names(dir.path()),
        ["ds", "existing.img", "image.fidx", "image.img"]
    );
    std::fs::write(removed, saved).unwrap();

    // A restore that completes replaces it, with the same mode, and no flag needed.
    restore(&store, &index, &output);
    assert!(std::fs::read(&output).unwrap() == data);
    let mode = std::fs::metadata(&output).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    assert_eq!(temporaries(dir.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_symlink_to_a_file_keeps_being_a_symlink_and_its_target_gets_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(2);
    let (store, index) = backed_up(dir.path(), "image", &data);
    let real = dir.path().join("real.img");
    std::fs::write(&real, b"old").unwrap();
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    restore(&store, &index, &link);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(std::fs::read(&real).unwrap() == data);

    // A dangling symlink and a folder are usage errors; nothing is created.
    let dangling = dir.path().join("dangling.img");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    failed_with(
        &cairn(&["restore", "--store", s(&store), s(&index), s(&dangling)]),
        2,
        "symlink to nothing",
    );
    assert!(!dir.path().join("nowhere").exists());
    failed_with(
        &cairn(&["restore", "--store", s(&store), s(&index), s(dir.path())]),
        2,
        "is a folder",
    );
    assert_eq!(temporaries(dir.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn standard_output_named_by_a_path_is_written_to_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(2);
    let (store, index) = backed_up(dir.path(), "image", &data);
    let link = dir.path().join("out.img");
    std::os::unix::fs::symlink("/dev/stdout", &link).unwrap();
    for output in ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1", s(&link)] {
        // `cairn restore … /dev/stdout >> log`: the log keeps what it had, the image follows.
        let log = dir.path().join("log");
        std::fs::write(&log, b"yesterday's log\n").unwrap();
        let appending = std::fs::File::options().append(true).open(&log).unwrap();
        let out = cairn_command(&["restore", "-q", "--store", s(&store), s(&index), output])
            .stdout(Stdio::from(appending))
            .output()
            .unwrap();
        ok(&out);
        let written = std::fs::read(&log).unwrap();
        assert!(
            written.starts_with(b"yesterday's log\n"),
            "{output}: the log was replaced"
        );
        assert!(written[16..] == data, "{output}: other bytes after the log");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(temporaries(dir.path()), Vec::<std::path::PathBuf>::new());
    }
    // Another descriptor open on a file is refused, and the file left as it was.
    let log = dir.path().join("other.log");
    std::fs::write(&log, b"keep me\n").unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 3>>{}; exec {} restore --store {} {} /dev/fd/3",
            s(&log),
            s(&binary()),
            s(&store),
            s(&index)
        ))
        .output()
        .unwrap();
    failed_with(&out, 2, "names an open descriptor");
    assert_eq!(std::fs::read(&log).unwrap(), b"keep me\n");
}
