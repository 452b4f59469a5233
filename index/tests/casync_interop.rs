//! Against the real `casync`: its indexes parse, their chunk ids are the digests of the input
//! ranges they cover, and cairn's casync chunker cuts exactly where casync does.
//!
//! Needs the `casync` binary (Debian's package). Without it the test prints a note and passes,
//! unless `CAIRN_REQUIRE_INTEROP=1` (set by `cargo xtask ci`), where a missing tool fails.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_index::{
    CasyncChunker, CasyncIndex, ChunkIndex, DigestAlgorithm, IndexFormat, SliceChunks,
};

fn casync() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("casync"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CAIRN_REQUIRE_INTEROP").is_none(),
            "casync is not installed, and CAIRN_REQUIRE_INTEROP demands the interop tests \
             (install it with `apt-get install casync`)"
        );
        eprintln!("note: casync not found; skipping the casync interop test");
    }
    found
}

fn xorshift(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// The inputs: random, repeated, zero runs between random parts, and the 0- and 1-byte edges.
fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let random = xorshift(1, 3 << 20);
    let block = xorshift(2, 300_000);
    let repeated: Vec<u8> = block.iter().cycle().take(2 << 20).copied().collect();
    let mut zero_runs = xorshift(3, 500_000);
    zero_runs.extend(std::iter::repeat_n(0u8, 1_500_000));
    zero_runs.extend(xorshift(4, 700_001));
    zero_runs.extend(std::iter::repeat_n(0u8, 300_000));
    vec![
        ("random", random),
        ("repeated", repeated),
        ("zero-runs", zero_runs),
        ("empty", Vec::new()),
        ("one-byte", vec![0x42]),
    ]
}

fn casync_make(casync: &Path, dir: &Path, input: &Path, args: &[&str], name: &str) -> PathBuf {
    let index = dir.join(format!("{name}.caibx"));
    let store = dir.join(format!("{name}.castr"));
    let output = Command::new(casync)
        .arg("make")
        .args(args)
        .arg(format!("--store={}", store.display()))
        .arg(&index)
        .arg(input)
        .output()
        .expect("run casync");
    assert!(
        output.status.success(),
        "casync make {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    index
}

#[test]
fn casync_indexes_parse_and_match_cairns_chunker() {
    let Some(casync) = casync() else { return };
    let dir = tempfile::tempdir().unwrap();
    let modes: [(&str, &[&str], CasyncChunker, DigestAlgorithm); 3] = [
        (
            "default",
            &[],
            CasyncChunker::default(),
            DigestAlgorithm::Sha512_256,
        ),
        (
            "sha256",
            &["--digest=sha256"],
            CasyncChunker::default(),
            DigestAlgorithm::Sha256,
        ),
        (
            "avg16k",
            &["--chunk-size=16384"],
            CasyncChunker::with_avg(16384).unwrap(),
            DigestAlgorithm::Sha512_256,
        ),
    ];
    let mut compared = 0;
    for (input_name, data) in inputs() {
        let input = dir.path().join(format!("{input_name}.raw"));
        std::fs::write(&input, &data).unwrap();
        for (mode, args, chunker, digest) in &modes {
            let what = format!("{input_name} with {mode}");
            let path = casync_make(
                &casync,
                dir.path(),
                &input,
                args,
                &format!("{input_name}-{mode}"),
            );
            let index = CasyncIndex::open(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(index.format(), IndexFormat::Caibx, "{what}");
            assert_eq!(index.digest_algorithm(), *digest, "{what}");
            let (min, avg, max) = chunker.sizes();
            let params = index.params();
            assert_eq!(
                (params.min, params.avg, params.max),
                (min as u64, avg as u64, max as u64),
                "{what}"
            );
            assert_eq!(index.image_size(), data.len() as u64, "{what}");
            for chunk in index.chunks() {
                let bytes = &data[chunk.start as usize..chunk.end as usize];
                assert_eq!(
                    digest.digest(bytes),
                    chunk.digest,
                    "{what}: chunk {} ({}..{}) has an id that is not the digest of its bytes",
                    chunk.index,
                    chunk.start,
                    chunk.end
                );
            }
            let theirs: Vec<u64> = index.chunks().map(|c| c.end).collect();
            let mut ours = Vec::new();
            let mut end = 0u64;
            for piece in SliceChunks::new(*chunker, &data) {
                end += piece.len() as u64;
                ours.push(end);
            }
            assert_eq!(
                ours, theirs,
                "{what}: chunk boundaries differ from casync's"
            );
            compared += theirs.len();
        }
    }
    assert!(compared > 100, "too few chunks compared: {compared}");
}
