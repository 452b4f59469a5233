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
    let made = Command::new(&casync)
        .arg("make")
        .arg(format!("--store={}", s(&store)))
        .arg(&index)
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = WebServer(
        Command::new(python)
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir.path().join("web"))
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
    let made = Command::new(&casync)
        .arg("make")
        .arg(format!("--store={}", s(&other_store)))
        .arg(&other_index)
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success());
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
