//! What the command says when data is bad: one line, each level of the error saying its own
//! part once, joined by `: `, with the store, the digest and the path each named once.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use cairn_index::ChunkIndex as _;
use common::*;

/// The one line on stderr, without `cairn: ` and the newline.
fn line(output: &std::process::Output, code: i32) -> String {
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
        .strip_prefix("cairn: ")
        .unwrap()
        .trim_end()
        .to_owned()
}

/// How often `needle` stands in `text`.
fn times(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn a_corrupt_and_a_missing_chunk_and_a_bad_index_are_each_told_once_per_level() {
    let dir = tempfile::tempdir().unwrap();
    let (store, index) = backed_up(dir.path(), "image", &random_bytes(3 << 20));
    let chunks = cairn_index::Index::open(&index).unwrap();
    let digest_of = |i: usize| cairn_chunk_store::to_hex(&chunks.chunk(i).unwrap().digest);
    let path_of = |digest: &str| store.join(".chunks").join(&digest[..4]).join(digest);
    let store_name = format!("pbs:{}", s(&store));

    // A corrupt chunk: a byte of its payload flipped, so its CRC no longer matches.
    let corrupt = digest_of(0);
    let corrupt_path = path_of(&corrupt);
    let mut bytes = std::fs::read(&corrupt_path).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&corrupt_path, &bytes).unwrap();
    let said = line(
        &cairn(&[
            "read",
            "--store",
            s(&store),
            s(&index),
            "--offset",
            "10",
            "--length",
            "5",
        ]),
        1,
    );
    let expected_start = format!(
        "reading image offset 10: chunk 0 (image bytes 0..1048576): {store_name}: chunk {corrupt} \
         at {} is corrupt: CRC-32 mismatch: header 0x",
        s(&corrupt_path)
    );
    assert!(
        said.starts_with(&expected_start),
        "{said}\nnot like\n{expected_start}"
    );
    assert_eq!(times(&said, &store_name), 1, "{said}");
    assert_eq!(times(&said, s(&corrupt_path)), 1, "{said}");
    // Once as the chunk's name, once inside its path; never again.
    assert_eq!(times(&said, &corrupt), 2, "{said}");
    assert_eq!(times(&said, "CRC-32 mismatch"), 1, "{said}");

    // A missing chunk.
    let missing = digest_of(1);
    let missing_path = path_of(&missing);
    std::fs::remove_file(&missing_path).unwrap();
    let said = line(
        &cairn(&[
            "read",
            "--store",
            s(&store),
            s(&index),
            "--offset",
            "1048576",
            "--length",
            "5",
        ]),
        1,
    );
    assert_eq!(
        said,
        format!(
            "reading image offset 1048576: chunk 1 (image bytes 1048576..2097152): {store_name}: \
             chunk {missing} is missing (not at {})",
            s(&missing_path)
        )
    );

    // An index that cannot be read, and one that is not an index.
    let absent = dir.path().join("absent.fidx");
    let said = line(&cairn(&["info", s(&absent)]), 1);
    assert_eq!(
        said,
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            s(&absent)
        )
    );
    let bad = dir.path().join("bad.fidx");
    std::fs::write(&bad, vec![7u8; 5000]).unwrap();
    let said = line(&cairn(&["restore", "--store", s(&store), s(&bad), "-"]), 1);
    assert_eq!(times(&said, s(&bad)), 1, "{said}");
    assert!(said.starts_with(&format!("{}: ", s(&bad))), "{said}");
    assert!(said.contains("magic"), "{said}");
}
