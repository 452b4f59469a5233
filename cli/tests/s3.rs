//! `--store s3://…` end to end: the built binary backs up to and restores from an S3 server
//! running in the test process (s3s over a folder), in PBS 4's layout and casync's.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;
#[path = "../../chunk-store/tests/support/fault_proxy.rs"]
mod fault_proxy;
#[path = "../../chunk-store/tests/support/s3_server.rs"]
mod s3_server;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use s3_server::serve_s3;

const ACCESS_KEY: &str = "cairn-cli-test";
const SECRET_KEY: &str = "cairn-cli-secret-do-not-print";

/// An S3 server over a temporary folder with bucket `backups`, on its own runtime.
struct Server {
    endpoint: String,
    root: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("backups")).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let endpoint = runtime
            .block_on(serve_s3(root.path(), ACCESS_KEY, SECRET_KEY))
            .unwrap();
        Self {
            endpoint,
            root,
            _runtime: runtime,
        }
    }

    /// Runs cairn with the credentials in the environment and `--s3-endpoint` added.
    fn cairn(&self, args: &[&str], secret: &str) -> Output {
        self.cairn_at(&self.endpoint, args, secret)
    }

    /// Runs cairn against `endpoint` (the server or a proxy in front of it).
    fn cairn_at(&self, endpoint: &str, args: &[&str], secret: &str) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--s3-endpoint", endpoint, "--s3-allow-http"]);
        cairn_command(&all)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .unwrap()
    }

    fn objects(&self) -> Vec<PathBuf> {
        walk(&self.root.path().join("backups"))
            .into_iter()
            .filter(|p| !p.to_string_lossy().contains(".s3s"))
            .collect()
    }
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn backup_to_s3_restore_and_verify_from_it_in_pbs_4s_layout() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(8);
    let input = dir.path().join("disk.img");
    std::fs::write(&input, &data).unwrap();
    let index = dir.path().join("disk.img.fidx");
    let store = "s3://backups/datastore1";
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let out = server.cairn(
        &[
            "backup",
            "-q",
            "--store",
            store,
            "--chunk-size",
            "1M",
            &s(&input),
            &s(&index),
        ],
        SECRET_KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    let objects = server.objects();
    assert!(!objects.is_empty());
    for object in &objects {
        let relative = object
            .strip_prefix(server.root.path().join("backups"))
            .unwrap();
        let parts: Vec<String> = relative
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(parts.len(), 4, "{relative:?}");
        assert_eq!(
            (parts[0].as_str(), parts[1].as_str()),
            ("datastore1", ".chunks"),
            "{relative:?}"
        );
        assert_eq!(parts[2], parts[3][..4], "{relative:?}");
    }
    // A second backup of the same image uploads nothing new.
    let out = server.cairn(
        &[
            "backup",
            "--store",
            store,
            "--chunk-size",
            "1M",
            &s(&input),
            &s(&dir.path().join("again.fidx")),
        ],
        SECRET_KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(" 0 new"), "{}", text(&out));
    assert_eq!(server.objects().len(), objects.len());

    let restored = dir.path().join("restored.img");
    let out = server.cairn(
        &["restore", "-q", "--store", store, &s(&index), &s(&restored)],
        SECRET_KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        std::fs::read(&restored).unwrap() == data,
        "restored image differs"
    );
    let out = server.cairn(&["verify", "-q", "--store", store, &s(&index)], SECRET_KEY);
    assert!(out.status.success(), "{}", text(&out));

    // The index itself from the bucket, where PBS 4 keeps a snapshot's files.
    let snapshot = ".cnt/vm/100/2026-12-01T10:00:00Z";
    let in_bucket = server.root.path().join("backups/datastore1").join(snapshot);
    std::fs::create_dir_all(&in_bucket).unwrap();
    std::fs::copy(&index, in_bucket.join("drive-scsi0.img.fidx")).unwrap();
    let url = format!("s3://backups/datastore1/{snapshot}/drive-scsi0.img.fidx");
    let from_url = dir.path().join("from-url.img");
    let out = server.cairn(
        &["restore", "-q", "--store", store, &url, &s(&from_url)],
        SECRET_KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        std::fs::read(&from_url).unwrap() == data,
        "restore of an index in S3 differs"
    );
    let out = server.cairn(
        &[
            "restore",
            "-q",
            "--store",
            store,
            &format!("{url}.nope"),
            &s(&dir.path().join("x.img")),
        ],
        SECRET_KEY,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no such index"), "{}", text(&out));

    // A wrong secret: access denied naming bucket and key, and the secret never printed.
    let out = server.cairn(
        &[
            "restore",
            "-q",
            "--store",
            store,
            &s(&index),
            &s(&dir.path().join("no.img")),
        ],
        "wrong-secret-value",
    );
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out);
    assert!(
        said.contains("access denied to s3://backups/datastore1/.chunks/"),
        "{said}"
    );
    assert!(
        !said.contains("wrong-secret-value") && !said.contains(SECRET_KEY),
        "{said}"
    );
    assert!(!dir.path().join("no.img").exists());
}

#[test]
fn caibx_backups_go_to_s3_in_the_castr_layout() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(4);
    let input = dir.path().join("disk.img");
    std::fs::write(&input, &data).unwrap();
    let index = dir.path().join("disk.caibx");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let store = "s3://backups/default.castr";
    let out = server.cairn(
        &[
            "backup",
            "-q",
            "--store",
            store,
            "--layout",
            "castr",
            "--format",
            "caibx",
            &s(&input),
            &s(&index),
        ],
        SECRET_KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        server
            .objects()
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "cacnk"))
    );
    let out = cairn_command(&[
        "cat",
        "--store",
        store,
        "--layout",
        "castr",
        "--s3-endpoint",
        &server.endpoint,
        "--s3-allow-http",
        &s(&index),
    ])
    .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stdout == data);
}

#[test]
fn a_restore_through_the_disk_cache_downloads_each_chunk_once() {
    let server = Server::start();
    let proxy = server._runtime.block_on(fault_proxy::FaultProxy::start(
        server.endpoint.trim_start_matches("http://"),
        |_, _, _| fault_proxy::Fault::Pass,
    ));
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(8);
    let input = dir.path().join("disk.img");
    std::fs::write(&input, &data).unwrap();
    let index = dir.path().join("disk.img.fidx");
    let store = "s3://backups/ds";
    let cache = dir.path().join("cache");
    let out = server.cairn(
        &[
            "backup",
            "-q",
            "--store",
            store,
            "--chunk-size",
            "256K",
            s(&input),
            s(&index),
        ],
        SECRET_KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    let chunks = server.objects().len();
    assert!(chunks > 10, "{chunks} chunks");
    let restore = |name: &str, cache_size: &str| {
        let output = dir.path().join(name);
        let out = server.cairn_at(
            &proxy.endpoint,
            &[
                "restore",
                "-q",
                "--store",
                store,
                "--disk-cache",
                s(&cache),
                "--disk-cache-size",
                cache_size,
                s(&index),
                s(&output),
            ],
            SECRET_KEY,
        );
        assert!(out.status.success(), "{}", text(&out));
        assert!(std::fs::read(&output).unwrap() == data, "{name} differs");
    };
    let chunk_gets = || {
        proxy
            .seen()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/.chunks/"))
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    };
    restore("first.img", "64MiB");
    let first = chunk_gets();
    let unique: std::collections::HashSet<_> = first.iter().collect();
    assert_eq!(first.len(), unique.len(), "a chunk was downloaded twice");
    assert!(
        first.len() <= chunks && first.len() + 2 >= chunks / 2,
        "{} gets",
        first.len()
    );
    // The cache is a PBS datastore holding exactly what was downloaded.
    let kept = walk(&cache.join(".chunks")).len();
    assert_eq!(kept, first.len());
    // Again: every chunk from the disk cache, none from the bucket.
    restore("second.img", "64MiB");
    assert_eq!(
        chunk_gets().len(),
        first.len(),
        "the second restore downloaded chunks"
    );
    // A budget of a quarter of the chunks: the cache stays within it and the restore is right.
    let budget = std::fs::metadata(&input).unwrap().len() / 4;
    restore("third.img", &budget.to_string());
    let on_disk: u64 = walk(&cache.join(".chunks"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        on_disk <= budget,
        "{on_disk} bytes in a {budget}-byte cache"
    );
}
