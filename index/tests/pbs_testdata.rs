//! The real PBS index in the shared test data, read in place.
//!
//! Plain `cargo test` skips (with a note) when the shared folder is absent; with
//! `CAIRN_REQUIRE_SHARED=1` (set by `cargo xtask ci`) a missing file fails.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::PathBuf;

use cairn_index::{ChecksumCheck, ChunkIndex, DigestAlgorithm, DynamicIndex, Index, IndexFormat};

fn shared_file() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/pbs/backup-client-pxar-data.ppxar.didx");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CAIRN_REQUIRE_SHARED").is_none(),
        "the shared PBS test file is missing at {}",
        path.display()
    );
    eprintln!(
        "note: {} is absent; skipping the real PBS index test",
        path.display()
    );
    None
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_real_pbs_didx_has_the_documented_facts() {
    let Some(path) = shared_file() else { return };
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 8096);
    let index = DynamicIndex::open(&path).unwrap();
    assert_eq!(index.checksum_check(), ChecksumCheck::Verified);
    assert_eq!(
        hex(&index.stored_checksum()),
        "e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20"
    );
    assert_eq!(index.chunk_count(), 100);
    assert_eq!(
        index.header().uuid_hex(),
        "f0ef7665555e417ea6eba00a375ceee0"
    );
    assert_eq!(index.header().ctime, 1_715_091_951);
    assert_eq!(index.chunk(0).unwrap().end, 1_048_608);
    assert_eq!(index.image_size(), 104_859_232);
    assert_eq!(index.digest_algorithm(), DigestAlgorithm::Sha256);
    let shared = index.chunk(1).unwrap().digest;
    assert!(hex(&shared).starts_with("504264eb") && hex(&shared).ends_with("979b"));
    assert!((1..=98).all(|i| index.chunk(i).unwrap().digest == shared));
    assert_ne!(index.chunk(0).unwrap().digest, shared);
    assert_ne!(index.chunk(99).unwrap().digest, shared);
    // Lookups at the edges.
    assert_eq!(index.locate(0), Some((0, 0)));
    assert_eq!(index.locate(1_048_607), Some((0, 1_048_607)));
    assert_eq!(index.locate(1_048_608), Some((1, 0)));
    assert_eq!(index.locate(104_859_231).map(|(i, _)| i), Some(99));
    assert_eq!(index.locate(104_859_232), None);
    // Detection by magic gives the same index.
    let detected = Index::open(&path).unwrap();
    assert_eq!(detected.format(), IndexFormat::Didx);
    assert_eq!(detected.checksum_matches(), Some(true));
}
