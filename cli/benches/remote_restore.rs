//! Restore of the demo's 1 GiB mixed image from a local PBS datastore and from the same chunks
//! in an S3 server in this process (s3s over a folder), side by side in one run, by the built
//! `cairn` binary: the gap is what S3 costs (signing, HTTP, the server), not cairn.
//!
//! `cargo bench -p cairn --bench remote_restore [-- SIZE [ROUNDS]]` (default 1G, 3 rounds).
//! 1 MiB chunks, so a restore keeps 32 requests in flight, the S3 store's default limit.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a measurement tool

#[path = "../../chunk-store/tests/support/s3_server.rs"]
mod s3_server;
mod support;

use std::path::Path;
use std::time::Instant;

use support::{cairn, demo_image, median, run, scratch, size_and_rounds};

use s3_server::serve_s3;

const KEY: &str = "bench";
const SECRET: &str = "bench-secret";

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// CPU seconds so far of this process (the S3 server's threads) and of its waited-for
/// children (the cairn runs), from /proc/self/stat.
fn cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // After the name: state is field 3, utime 14, stime 15, cutime 16, cstime 17 (1-based).
    let tick = 100.0;
    (
        (fields[11] + fields[12]) / tick,
        (fields[13] + fields[14]) / tick,
    )
}

/// One restore with `store_args`: wall seconds, cairn's CPU seconds, this process's.
fn restore(store_args: &[&str], index: &Path, output: &Path, endpoint: &str) -> (f64, f64, f64) {
    let _ = std::fs::remove_file(output);
    let (server_before, cairn_before) = cpu();
    let started = Instant::now();
    run(cairn()
        .arg("restore")
        .arg("-q")
        .args(store_args)
        .args(["--s3-endpoint", endpoint, "--s3-allow-http"])
        .arg(index)
        .arg(output)
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("AWS_ENDPOINT_URL"));
    let wall = started.elapsed().as_secs_f64();
    let (server_after, cairn_after) = cpu();
    (
        wall,
        cairn_after - cairn_before,
        server_after - server_before,
    )
}

fn main() {
    let (size, rounds) = size_and_rounds();
    let dir = scratch();
    let work = dir.path();
    let (image, bytes) = demo_image(work, &size);
    let datastore = work.join("ds");
    let index = work.join("sample.fidx");
    run(cairn()
        .args(["backup", "-q", "--chunk-size", "1M", "--store"])
        .arg(&datastore)
        .arg(&image)
        .arg(&index));
    // The same chunks in a bucket: s3s-fs keeps an object as a file at its key.
    let root = work.join("s3");
    copy_tree(&datastore, &root.join("bench/ds"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let endpoint = runtime.block_on(serve_s3(&root, KEY, SECRET)).unwrap();

    let output = work.join("restored.img");
    let local = ["--store", datastore.to_str().unwrap()];
    let s3 = ["--store", "s3://bench/ds"];
    let (mut from_local, mut from_s3) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let l = restore(&local, &index, &output, &endpoint);
        let r = restore(&s3, &index, &output, &endpoint);
        println!(
            "round {round}: local {:.2} s (cairn cpu {:.2} s); s3 {:.2} s (cairn cpu {:.2} s, server cpu {:.2} s)",
            l.0, l.1, r.0, r.1, r.2
        );
        from_local.push(l);
        from_s3.push(r);
    }
    let mb = bytes as f64 / 1e6;
    let pick =
        |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| median(v.iter().map(f).collect());
    let (local, s3) = (pick(&from_local, |r| r.0), pick(&from_s3, |r| r.0));
    println!(
        "restore of {mb:.0} MB, median of {rounds}: local {:.0} MB/s, s3 (in-process s3s, 32 in flight) {:.0} MB/s, s3/local {:.2}",
        mb / local,
        mb / s3,
        local / s3
    );
    println!(
        "cpu per restore (median): cairn local {:.2} s, cairn s3 {:.2} s, s3 server {:.2} s",
        pick(&from_local, |r| r.1),
        pick(&from_s3, |r| r.1),
        pick(&from_s3, |r| r.2)
    );
}
