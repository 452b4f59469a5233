//! `--store http://…`: a casync store made by the real `casync make`, published by a real web
//! server (`python3 -m http.server`), restored by cairn byte for byte; backups to HTTP refused.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct WebServer(Child);

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `python3 -m http.server` over `folder` on a free port, once it answers.
fn serve(python: &std::path::Path, folder: &std::path::Path) -> (WebServer, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = WebServer(
        Command::new(python)
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(folder)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the web server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

#[test]
fn casync_stores_restore_over_http_and_backups_to_http_are_refused() {
    let (Some(casync), Some(python)) = (tool("casync"), tool("python3")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(6);
    let input = dir.path().join("disk.img");
    std::fs::write(&input, &data).unwrap();
    let store = dir.path().join("web/default.castr");
    std::fs::create_dir_all(&store).unwrap();
    let index = dir.path().join("disk.caibx");
    casync_make(&casync, &store, &index, &input);

    let (_server, port) = serve(&python, &dir.path().join("web"));
    let url = format!("http://127.0.0.1:{port}/default.castr");

    let restored = dir.path().join("restored.img");
    ok(&cairn(&[
        "restore",
        "-q",
        "--store",
        &url,
        s(&index),
        s(&restored),
    ]));
    assert!(
        std::fs::read(&restored).unwrap() == data,
        "restore over HTTP differs"
    );
    ok(&cairn(&[
        "verify",
        "-q",
        "--store",
        &url,
        "--layout",
        "castr",
        s(&index),
    ]));

    // A chunk the server does not have: an error naming the URL, no output.
    let other = dir.path().join("other.img");
    std::fs::write(&other, random_bytes(300_000)).unwrap();
    let other_store = dir.path().join("other.castr");
    let other_index = dir.path().join("other.caibx");
    casync_make(&casync, &other_store, &other_index, &other);
    let missing = dir.path().join("missing.img");
    let out = cairn(&[
        "restore",
        "-q",
        "--store",
        &url,
        s(&other_index),
        s(&missing),
    ]);
    let said = failed_with(&out, 1, "missing");
    assert!(said.contains(&url), "{said}");
    assert!(!missing.exists());

    let out = cairn(&[
        "backup",
        "--store",
        &url,
        "--format",
        "caibx",
        s(&input),
        s(&dir.path().join("x.caibx")),
    ]);
    failed_with(&out, 2, "read-only");
}

/// Runs `cairn args` under `/usr/bin/time`: its output and its peak resident memory in MiB.
fn peak(time: &std::path::Path, args: &[&str]) -> (std::process::Output, u64) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(time)
        .args(["-f", "%M", "-o", s(report.path())])
        .arg(binary())
        .args(args)
        .output()
        .unwrap();
    let kib: u64 = std::fs::read_to_string(report.path())
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (out, kib >> 10)
}

/// A sparse file of `len` bytes at `path` (nothing of it on disk), starting with `head`.
fn sparse(path: &std::path::Path, head: &[u8], len: u64) {
    std::fs::write(path, head).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn hostile_servers_and_files_that_are_no_index_are_refused_in_bounded_memory() {
    let (Some(python), Some(time)) = (tool("python3"), tool("time")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web");
    std::fs::create_dir(&web).unwrap();
    let data = mixed_image(4);
    let (store, index) = backed_up(&web, "disk", &data);
    // A gigabyte where a chunk belongs.
    let chunk = walk(&store.join(".chunks")).into_iter().max().unwrap();
    sparse(&chunk, b"", 1 << 30);
    // Two gigabytes where an index belongs: a dynamic index's header, then nothing.
    let didx = web.join("huge.didx");
    ok(&cairn(&[
        "backup",
        "-q",
        "--store",
        s(&store),
        "--format",
        "didx",
        s(&web.join("disk.img")),
        s(&didx),
    ]));
    let head = std::fs::read(&didx).unwrap();
    sparse(&didx, &head[..4096], 2 << 30);
    let (_server, port) = serve(&python, &web);
    let url = format!("http://127.0.0.1:{port}");
    let limit = 400;

    let restored = dir.path().join("restored.img");
    let (out, mib) = peak(
        &time,
        &[
            "restore",
            "-q",
            "--store",
            &format!("{url}/ds"),
            s(&index),
            s(&restored),
        ],
    );
    let said = failed_with(&out, 1, "over the");
    assert!(said.contains(&format!("{url}/ds/.chunks/")), "{said}");
    assert!(mib < limit, "restore took {mib} MiB");
    assert!(!restored.exists());

    let (out, mib) = peak(
        &time,
        &[
            "cat",
            "--store",
            &format!("{url}/ds"),
            &format!("{url}/huge.didx"),
        ],
    );
    let said = failed_with(&out, 1, "over the");
    assert!(said.contains("huge.didx"), "{said}");
    assert!(mib < limit, "cat took {mib} MiB");

    // A 4 GiB disk image given where the index goes (arguments swapped), and one that starts
    // like an index; and an endless source of zeros.
    let image = dir.path().join("disk.img");
    sparse(&image, &[0xeb, 0x63, 0x90], 4 << 30);
    let fake = dir.path().join("fake.didx");
    sparse(&fake, &head[..4096], 4 << 30);
    for (given, words) in [
        (s(&image), "not a chunk index"),
        (s(&fake), "largest index cairn reads"),
        ("/dev/zero", "not a chunk index"),
    ] {
        let (out, mib) = peak(&time, &["info", given]);
        failed_with(&out, 1, words);
        assert!(mib < limit, "info of {given} took {mib} MiB");
        let (out, mib) = peak(
            &time,
            &["restore", "-q", "--store", s(&store), given, s(&restored)],
        );
        failed_with(&out, 1, words);
        assert!(mib < limit, "restore of {given} took {mib} MiB");
    }
}
