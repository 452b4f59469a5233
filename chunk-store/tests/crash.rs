//! Crash safety: a process killed with SIGKILL in the middle of many inserts leaves no chunk
//! under a final name whose contents fail verification.
//!
//! The test runs its own binary again as the child: started with `CAIRN_CRASH_STORE` naming a
//! store, the same test inserts chunks until it is killed, and never returns.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cairn_chunk_store::*;

fn chunk(i: u64) -> Vec<u8> {
    // Big enough that a write is caught half-done now and then; distinct per i.
    let mut data =
        cairn_chunk_store::conformance::sample_chunk(i, 256 * 1024 + (i as usize % 4096));
    data[..8].copy_from_slice(&i.to_le_bytes());
    data
}

/// The child's part: insert chunks into the store at `base` until killed.
fn insert_until_killed(base: &std::ffi::OsStr) -> ! {
    let pbs = std::env::var_os("CAIRN_CRASH_KIND").is_some_and(|k| k == "pbs");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store: Arc<dyn ChunkStore> = if pbs {
            Arc::new(PbsDatastore::create(base).unwrap())
        } else {
            Arc::new(CastrStore::create(base).unwrap())
        };
        let algorithm = if pbs {
            DigestAlgorithm::Sha256
        } else {
            DigestAlgorithm::Sha512_256
        };
        let source = ChunkSource::new(store, algorithm);
        for i in 0.. {
            source.write(chunk(i)).await.unwrap();
        }
    });
    unreachable!("the child inserts until it is killed")
}

#[test]
fn sigkill_mid_insert_leaves_no_bad_chunk() {
    if let Some(base) = std::env::var_os("CAIRN_CRASH_STORE") {
        insert_until_killed(&base);
    }
    for kind in ["pbs", "castr"] {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("store");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_mid_insert_leaves_no_bad_chunk",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CAIRN_CRASH_STORE", &base)
            .env("CAIRN_CRASH_KIND", kind)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();

        let (digests, algorithm, paths) = if kind == "pbs" {
            let store = PbsDatastore::open(&base).unwrap();
            let digests = store.digests().unwrap();
            let paths: Vec<_> = digests.iter().map(|d| store.chunk_path(d)).collect();
            (digests, DigestAlgorithm::Sha256, paths)
        } else {
            let store = CastrStore::open(&base).unwrap();
            let digests = store.digests().unwrap();
            let paths: Vec<_> = digests.iter().map(|d| store.chunk_path(d)).collect();
            (digests, DigestAlgorithm::Sha512_256, paths)
        };
        assert!(
            digests.len() >= 3,
            "{kind}: the child wrote only {} chunks before the kill",
            digests.len()
        );
        for (digest, path) in digests.iter().zip(&paths) {
            let bytes = std::fs::read(path).unwrap();
            let plaintext = if kind == "pbs" {
                decode_blob(&bytes, 1 << 20)
            } else {
                decode_casync_chunk(&bytes, 1 << 20)
            }
            .unwrap_or_else(|e| {
                panic!(
                    "{kind}: chunk {} under its final name does not decode: {e}",
                    to_hex(digest)
                )
            });
            assert_eq!(
                algorithm.digest(&plaintext),
                *digest,
                "{kind}: chunk {}",
                to_hex(digest)
            );
        }
        eprintln!("{kind}: {} chunks verified after SIGKILL", digests.len());
    }
}
