//! `--store s3://…` against a second, independent S3 implementation in its own process:
//! `moto_server` (`pip install 'moto[s3]' flask flask-cors`, which `.ci/run` does), black-box
//! through the built binary: backup, restore, verify, and an index read from the bucket.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::io::{Read as _, Write as _};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A `moto_server` child process on a free port, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Option<Self> {
        let program = tool("moto_server")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Self { child, port };
        let started = Instant::now();
        while moto.raw("GET", "/", &[]).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One plain request (moto does not check signatures); the status.
    fn raw(&self, method: &str, path: &str, body: &[u8]) -> Option<u16> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).ok()?;
        stream.write_all(body).ok()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).ok()?;
        String::from_utf8_lossy(&reply)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    fn cairn(&self, args: &[&str]) -> Output {
        let endpoint = self.endpoint();
        let mut all = args.to_vec();
        all.extend(["--s3-endpoint", &endpoint, "--s3-allow-http"]);
        cairn_command(&all)
            .env("AWS_ACCESS_KEY_ID", "moto-key")
            .env("AWS_SECRET_ACCESS_KEY", "moto-secret")
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn backup_restore_verify_and_an_index_from_the_bucket_on_moto() {
    let Some(moto) = Moto::start() else {
        return;
    };
    assert_eq!(moto.raw("PUT", "/backups", &[]), Some(200));
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(8);
    let input = dir.path().join("disk.img");
    std::fs::write(&input, &data).unwrap();
    let index = dir.path().join("disk.img.fidx");
    let store = "s3://backups/ds";
    ok(&moto.cairn(&[
        "backup",
        "-q",
        "--store",
        store,
        "--chunk-size",
        "1M",
        s(&input),
        s(&index),
    ]));
    // Again: nothing new goes up.
    let out = moto.cairn(&[
        "backup",
        "--store",
        store,
        "--chunk-size",
        "1M",
        s(&input),
        s(&dir.path().join("again.fidx")),
    ]);
    ok(&out);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(said.contains(" 0 new"), "{said}");

    let restored = dir.path().join("restored.img");
    ok(&moto.cairn(&["restore", "-q", "--store", store, s(&index), s(&restored)]));
    assert!(
        std::fs::read(&restored).unwrap() == data,
        "restore from moto differs"
    );
    ok(&moto.cairn(&["verify", "-q", "--store", store, s(&index)]));

    // The index in the bucket, where PBS 4 keeps a snapshot's files.
    let key = "/backups/ds/.cnt/vm/100/2026-12-01T10:00:00Z/drive-scsi0.img.fidx";
    assert_eq!(
        moto.raw("PUT", key, &std::fs::read(&index).unwrap()),
        Some(200)
    );
    let from_url = dir.path().join("from-url.img");
    ok(&moto.cairn(&[
        "restore",
        "-q",
        "--store",
        store,
        &format!("s3:/{key}"),
        s(&from_url),
    ]));
    assert!(
        std::fs::read(&from_url).unwrap() == data,
        "restore of an index in S3 differs"
    );

    // A chunk the bucket lacks: a missing chunk naming bucket and key, no output.
    let other = dir.path().join("other.img");
    std::fs::write(&other, random_bytes(2 << 20)).unwrap();
    let local = dir.path().join("local-ds");
    let other_index = dir.path().join("other.fidx");
    backup(&local, &other, &other_index);
    let out = moto.cairn(&[
        "restore",
        "-q",
        "--store",
        store,
        s(&other_index),
        s(&dir.path().join("x")),
    ]);
    let said = failed_with(&out, 1, "missing");
    assert!(said.contains("s3://backups/ds/.chunks/"), "{said}");
    assert!(!dir.path().join("x").exists());
}
