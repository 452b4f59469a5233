//! Restore of the demo's 1 GiB mixed image backed up plain and backed up encrypted (PBS's
//! client-side encryption, `--keyfile`), side by side in one run, by the built `cairn`
//! binary: what AES-256-GCM costs next to hashing and decompressing.
//!
//! `cargo bench -p cairn --bench encrypted_restore [-- SIZE [ROUNDS]]` (default 1G, 3 rounds).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a measurement tool

mod support;

use support::{cairn, demo_image, median, run, scratch, size_and_rounds, timed};

fn main() {
    let (size, rounds) = size_and_rounds();
    let dir = scratch();
    let work = dir.path();
    let (image, bytes) = demo_image(work, &size);
    let key = work.join("key.json");
    run(cairn()
        .args(["key", "create", "-q", "--kdf", "none"])
        .arg(&key));
    let (plain, encrypted) = (work.join("plain"), work.join("encrypted"));
    let (plain_index, encrypted_index) = (work.join("plain.fidx"), work.join("encrypted.fidx"));
    let backup_plain = timed(
        cairn()
            .args(["backup", "-q", "--store"])
            .arg(&plain)
            .arg(&image)
            .arg(&plain_index),
    );
    let backup_encrypted = timed(
        cairn()
            .args(["backup", "-q", "--keyfile"])
            .arg(&key)
            .arg("--store")
            .arg(&encrypted)
            .arg(&image)
            .arg(&encrypted_index),
    );
    let output = work.join("restored.img");
    let (mut from_plain, mut from_encrypted) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let _ = std::fs::remove_file(&output);
        let p = timed(
            cairn()
                .args(["restore", "-q", "--store"])
                .arg(&plain)
                .arg(&plain_index)
                .arg(&output),
        );
        let _ = std::fs::remove_file(&output);
        let e = timed(
            cairn()
                .args(["restore", "-q", "--keyfile"])
                .arg(&key)
                .arg("--store")
                .arg(&encrypted)
                .arg(&encrypted_index)
                .arg(&output),
        );
        assert!(std::fs::read(&output).unwrap() == std::fs::read(&image).unwrap());
        println!("round {round}: plain {p:.2} s, encrypted {e:.2} s");
        from_plain.push(p);
        from_encrypted.push(e);
    }
    let mb = bytes as f64 / 1e6;
    let (p, e) = (median(from_plain), median(from_encrypted));
    println!(
        "restore of {mb:.0} MB, median of {rounds}: plain {:.0} MB/s, encrypted {:.0} MB/s, encrypted/plain {:.2}",
        mb / p,
        mb / e,
        p / e
    );
    println!(
        "backup (one each): plain {:.0} MB/s, encrypted {:.0} MB/s",
        mb / backup_plain,
        mb / backup_encrypted
    );
}
