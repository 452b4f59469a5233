//! Real casync chunk stores: every `.cacnk` that `casync make` writes (zstd, xz, gzip; both
//! digests) decodes, and its plaintext hashes to its file name.
//!
//! Needs Debian's `casync`; without it the test prints a note and passes, unless
//! `CAIRN_REQUIRE_INTEROP=1` (set by `cargo xtask ci`).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use cairn_chunk_store::conformance::sample_chunk;
use cairn_chunk_store::format::*;
use cairn_chunk_store::*;

fn casync() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("casync"))
            .find(|c| c.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CAIRN_REQUIRE_INTEROP").is_none(),
            "casync is not installed, and CAIRN_REQUIRE_INTEROP demands it (apt-get install casync)"
        );
        eprintln!("note: casync not found; skipping");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_casync_chunk_decodes_to_its_id() {
    let Some(casync) = casync() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.raw");
    let mut data = sample_chunk(42, 3 << 20);
    data.extend(std::iter::repeat_n(0u8, 1 << 20));
    std::fs::write(&input, &data).unwrap();
    let modes: [(&str, &[&str], CasyncCompression, DigestAlgorithm); 4] = [
        (
            "zstd",
            &[],
            CasyncCompression::Zstd,
            DigestAlgorithm::Sha512_256,
        ),
        (
            "xz",
            &["--compression=xz"],
            CasyncCompression::Xz,
            DigestAlgorithm::Sha512_256,
        ),
        (
            "gzip",
            &["--compression=gzip"],
            CasyncCompression::Gzip,
            DigestAlgorithm::Sha512_256,
        ),
        (
            "sha256",
            &["--digest=sha256"],
            CasyncCompression::Zstd,
            DigestAlgorithm::Sha256,
        ),
    ];
    for (name, args, compression, algorithm) in modes {
        let store_path = dir.path().join(format!("{name}.castr"));
        let output = Command::new(&casync)
            .arg("make")
            .args(args)
            .arg(format!("--store={}", store_path.display()))
            .arg(dir.path().join(format!("{name}.caibx")))
            .arg(&input)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let store = CastrStore::open(&store_path).unwrap();
        let digests = store.digests().unwrap();
        assert!(digests.len() > 10, "{name}: only {} chunks", digests.len());
        let source = ChunkSource::new(Arc::new(store.clone()), algorithm);
        for digest in &digests {
            let bytes = std::fs::read(store.chunk_path(digest)).unwrap();
            assert_eq!(CasyncCompression::of(&bytes), Some(compression), "{name}");
            let plaintext = decode_casync_chunk(&bytes, 1 << 20).unwrap();
            assert_eq!(
                algorithm.digest(&plaintext),
                *digest,
                "{name}: {}",
                to_hex(digest)
            );
            // And through the verified path of the store.
            assert_eq!(
                source.read(digest, plaintext.len()).await.unwrap(),
                plaintext
            );
        }
    }
}
