//! Each validation failure gives its own error variant, with the facts a user needs.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::io::Cursor;

use cairn_index::*;

fn open(bytes: Vec<u8>) -> Result<Index> {
    Index::from_bytes(bytes, Origin::memory(), &OpenOptions::default())
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn fixed(size: u64, chunk_size: u64) -> Vec<u8> {
    let mut writer = FixedIndexWriter::new(Cursor::new(Vec::new()), chunk_size).unwrap();
    for i in 0..size.div_ceil(chunk_size) {
        writer.push(&[i as u8; 32]).unwrap();
    }
    writer.finish(size).unwrap().into_inner()
}

fn dynamic(ends: &[u64]) -> Vec<u8> {
    let mut writer = DynamicIndexWriter::new(Cursor::new(Vec::new())).unwrap();
    for &end in ends {
        writer.push(end, &[end as u8; 32]).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn casync(ends: &[u64]) -> Vec<u8> {
    let params = CasyncParams {
        min: 1,
        avg: 64,
        max: 1000,
        ..CasyncParams::DEFAULT
    };
    let mut writer = CasyncIndexWriter::new(Vec::new(), params).unwrap();
    for &end in ends {
        writer.push(end, &[1; 32]).unwrap();
    }
    writer.finish().unwrap()
}

#[test]
fn unknown_data_is_bad_magic_and_tiny_data_is_truncated() {
    let error = open(vec![0x55; 5000]).unwrap_err();
    assert!(matches!(error, IndexError::BadMagic { .. }), "{error}");
    assert!(error.to_string().contains("5555555555555555"), "{error}");
    assert!(matches!(
        open(vec![]).unwrap_err(),
        IndexError::Truncated { .. }
    ));
    assert!(matches!(
        open(vec![0x2f, 0x7f]).unwrap_err(),
        IndexError::Truncated { .. }
    ));
}

#[test]
fn fixed_chunk_size_zero_or_not_a_power_of_two() {
    for bad in [0u64, 3, 4096 + 1] {
        let mut bytes = fixed(8192, 4096);
        put_u64(&mut bytes, 72, bad);
        let error = open(bytes).unwrap_err();
        assert!(
            matches!(error, IndexError::ChunkSize { chunk_size, .. } if chunk_size == bad),
            "{error}"
        );
    }
    assert!(matches!(
        FixedIndexWriter::new(Cursor::new(Vec::new()), 0).unwrap_err(),
        IndexError::ChunkSize { .. }
    ));
}

#[test]
fn fixed_length_must_match_size_and_chunk_size() {
    let mut bytes = fixed(8192, 4096);
    put_u64(&mut bytes, 64, 4096 * 5);
    let error = open(bytes).unwrap_err();
    assert!(matches!(error, IndexError::Length { .. }), "{error}");
    assert!(error.to_string().contains("needs 5 digests"), "{error}");
    // A size whose table would overflow is a length error, not an overflow.
    let mut bytes = fixed(8192, 4096);
    put_u64(&mut bytes, 64, u64::MAX);
    put_u64(&mut bytes, 72, 1);
    assert!(matches!(
        open(bytes).unwrap_err(),
        IndexError::Length { .. }
    ));
}

#[test]
fn an_empty_fixed_image_is_valid() {
    let index = open(fixed(0, 4 << 20)).unwrap();
    assert_eq!((index.chunk_count(), index.image_size()), (0, 0));
    assert_eq!(index.locate(0), None);
}

#[test]
fn checksum_mismatch_names_both_sums_and_can_be_skipped() {
    let mut bytes = dynamic(&[10, 20]);
    bytes[4096 + 8] ^= 1; // a digest byte
    let error = open(bytes.clone()).unwrap_err();
    assert!(
        matches!(error, IndexError::ChecksumMismatch { .. }),
        "{error}"
    );
    let skipped = Index::from_bytes(
        bytes,
        Origin::memory(),
        &OpenOptions::new().verify_checksum(false),
    )
    .unwrap();
    assert_eq!(skipped.checksum_matches(), Some(false));
    let Index::Dynamic(dynamic) = skipped else {
        panic!("not dynamic")
    };
    assert_eq!(dynamic.checksum_check(), ChecksumCheck::Skipped);
}

#[test]
fn dynamic_table_must_be_whole_entries() {
    let mut bytes = dynamic(&[10, 20]);
    bytes.push(0);
    assert!(matches!(
        open(bytes).unwrap_err(),
        IndexError::Length { .. }
    ));
}

#[test]
fn ends_must_strictly_increase() {
    // Written through a raw table, since the writer refuses it.
    let mut bytes = dynamic(&[10, 20, 30]);
    put_u64(&mut bytes, 4096 + 80, 20);
    let error = Index::from_bytes(
        bytes,
        Origin::memory(),
        &OpenOptions::new().verify_checksum(false),
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            IndexError::EndsNotIncreasing {
                entry: 2,
                previous: 20,
                end: 20,
                position: 4176,
                ..
            }
        ),
        "{error}"
    );
    let mut bytes = casync(&[10, 20]);
    put_u64(&mut bytes, 0x40, 0);
    assert!(matches!(
        open(bytes).unwrap_err(),
        IndexError::EndsNotIncreasing { entry: 0, .. }
    ));
    let mut writer = DynamicIndexWriter::new(Cursor::new(Vec::new())).unwrap();
    writer.push(10, &[0; 32]).unwrap();
    assert!(matches!(
        writer.push(10, &[0; 32]).unwrap_err(),
        IndexError::EndsNotIncreasing { .. }
    ));
}

#[test]
fn an_empty_dynamic_index_is_valid() {
    let index = open(dynamic(&[])).unwrap();
    assert_eq!(
        (index.chunk_count(), index.image_size(), index.locate(0)),
        (0, 0, None)
    );
}

#[test]
fn casync_header_and_tail_fields_are_checked() {
    let cases: [(usize, &str); 7] = [
        (0x00, "header size"),
        (0x30, "table size"),
        (0x38, "table marker"),
        (usize::MAX - 39, "tail offset"),
        (usize::MAX - 23, "tail index offset"),
        (usize::MAX - 15, "tail table size"),
        (usize::MAX - 7, "tail marker"),
    ];
    for (at, name) in cases {
        let mut bytes = casync(&[10, 20]);
        let at = if at > 0x1000 {
            bytes.len() - (usize::MAX - at) - 1
        } else {
            at
        };
        put_u64(&mut bytes, at, 0x1234);
        let error = open(bytes).unwrap_err();
        assert!(
            matches!(&error, IndexError::CasyncField { field, position, found: 0x1234, .. } if *field == name && *position == at as u64),
            "{name}: {error}"
        );
    }
}

#[test]
fn casync_chunk_size_limits() {
    for (min, avg, max) in [
        (0, 10, 100),
        (20, 10, 100),
        (1, 200, 100),
        (1, 10, (128 << 20) + 1),
    ] {
        let mut bytes = casync(&[10]);
        put_u64(&mut bytes, 0x18, min);
        put_u64(&mut bytes, 0x20, avg);
        put_u64(&mut bytes, 0x28, max);
        let error = open(bytes).unwrap_err();
        assert!(
            matches!(error, IndexError::ChunkSizeLimits { .. }),
            "{min}/{avg}/{max}: {error}"
        );
    }
}

#[test]
fn a_casync_chunk_over_the_maximum_is_an_error() {
    let mut bytes = casync(&[10, 20]);
    put_u64(&mut bytes, 0x28, 64); // max 64, avg 64
    put_u64(&mut bytes, 0x40 + 40, 100); // chunk 1 is 90 bytes
    let error = open(bytes).unwrap_err();
    assert!(
        matches!(
            error,
            IndexError::ChunkTooLarge {
                entry: 1,
                size: 90,
                max: 64,
                ..
            }
        ),
        "{error}"
    );
    let params = CasyncParams {
        min: 1,
        avg: 8,
        max: 8,
        ..CasyncParams::DEFAULT
    };
    let mut writer = CasyncIndexWriter::new(Vec::new(), params).unwrap();
    assert!(matches!(
        writer.push(9, &[0; 32]).unwrap_err(),
        IndexError::ChunkTooLarge { .. }
    ));
}

#[test]
fn fixed_writer_checks_the_digest_count() {
    let mut writer = FixedIndexWriter::new(Cursor::new(Vec::new()), 4096).unwrap();
    writer.push(&[0; 32]).unwrap();
    let error = writer.finish(8192).unwrap_err();
    assert!(
        matches!(
            error,
            IndexError::ChunkCount {
                pushed: 1,
                needed: 2,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.fidx");
    let mut bytes = fixed(8192, 4096);
    put_u64(&mut bytes, 72, 0);
    std::fs::write(&path, bytes).unwrap();
    let message = Index::open(&path).unwrap_err().to_string();
    assert!(
        message.starts_with(&path.display().to_string()),
        "{message}"
    );
    let missing = Index::open(dir.path().join("missing.didx")).unwrap_err();
    assert!(matches!(missing, IndexError::Read { .. }));
    assert!(missing.to_string().contains("missing.didx"));
}

#[test]
fn index_files_appear_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.fidx");
    let mut writer = FixedIndexWriter::create(&path, 4096).unwrap();
    writer.push(&[1; 32]).unwrap();
    assert!(!path.exists(), "nothing under the final name before commit");
    writer.finish(4096).unwrap().commit().unwrap();
    assert_eq!(FixedIndex::open(&path).unwrap().chunk_count(), 1);
    // An abandoned writer leaves neither a final file nor a temporary one.
    let other = dir.path().join("other.didx");
    let mut writer = DynamicIndexWriter::create(&other).unwrap();
    writer.push(5, &[0; 32]).unwrap();
    drop(writer);
    assert!(!other.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only image.fidx remains: {left:?}");
    // A failed finish leaves nothing either.
    let third = dir.path().join("third.fidx");
    let writer = FixedIndexWriter::create(&third, 4096).unwrap();
    assert!(matches!(
        writer.finish(1),
        Err(IndexError::ChunkCount {
            pushed: 0,
            needed: 1,
            ..
        })
    ));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_commit_that_fails_leaves_no_temporary_and_the_destination_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    // The rename fails: the destination is a folder that is not empty.
    let destination = dir.path().join("image.fidx");
    std::fs::create_dir(&destination).unwrap();
    std::fs::write(destination.join("keep"), b"kept").unwrap();
    let mut writer = FixedIndexWriter::create(&destination, 4096).unwrap();
    writer.push(&[1; 32]).unwrap();
    let file = writer.finish(4096).unwrap();
    let temporary = file.temporary().to_path_buf();
    assert!(temporary.exists());
    match file.commit() {
        Err(IndexError::Write { file, source }) => {
            assert!(file.to_string().contains("image.fidx"), "{file}");
            assert!(source.raw_os_error().is_some(), "{source}");
        }
        other => panic!("expected a write error, got {other:?}"),
    }
    assert!(
        !temporary.exists(),
        "the temporary file outlived the failed commit"
    );
    assert_eq!(std::fs::read(destination.join("keep")).unwrap(), b"kept");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["image.fidx"],
        "only the folder that was there remains"
    );
}

#[test]
fn casync_kind_comes_from_the_extension_or_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = casync(&[10]);
    for (name, expected) in [
        ("a.caidx", IndexFormat::Caidx),
        ("a.caibx", IndexFormat::Caibx),
        ("a.idx", IndexFormat::Caibx),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(Index::open(&path).unwrap().format(), expected, "{name}");
    }
    let mut archive = bytes;
    put_u64(&mut archive, 0x10, 0xb000_0001_ffef_fe26);
    assert_eq!(open(archive).unwrap().format(), IndexFormat::Caidx);
}

/// Feeds `bytes` to an [`IndexBytes`] in pieces of `piece`; the error of the first piece
/// refused, and how many bytes had been taken by then.
fn feed(bytes: &[u8], piece: usize, declared: Option<u64>) -> (Result<Index>, usize) {
    let mut loader = IndexBytes::new(Origin::memory());
    for part in bytes.chunks(piece) {
        let taken = loader.len();
        if let Err(error) = loader.push(part) {
            return (Err(error), taken);
        }
        if let Some(len) = declared
            && let Err(error) = loader.expect_len(len)
        {
            return (Err(error), loader.len());
        }
    }
    let taken = loader.len();
    (loader.finish(&OpenOptions::default()), taken)
}

#[test]
fn an_index_arriving_in_pieces_is_the_index_and_anything_else_is_refused_at_once() {
    // Every format, in pieces of any size, is the index from_bytes makes.
    for bytes in [
        fixed(1 << 20, 4096),
        dynamic(&[10, 300, 5000]),
        casync(&[10, 300, 900]),
    ] {
        for piece in [1, 7, 4096, 1 << 20] {
            let (index, taken) = feed(&bytes, piece, Some(bytes.len() as u64));
            let index = index.unwrap();
            assert_eq!(taken, bytes.len());
            assert_eq!(
                index.image_size(),
                open(bytes.clone()).unwrap().image_size()
            );
        }
    }
    // A disk image where the index belongs: refused at its first 16 bytes.
    let (error, taken) = feed(&[0xeb; 1 << 20], 16, None);
    assert!(
        matches!(error, Err(IndexError::BadMagic { .. })),
        "{error:?}"
    );
    assert_eq!(taken, 0);
    // A fixed index longer than its header allows: refused at the first byte over.
    let mut long = fixed(1 << 20, 4096);
    let exact = long.len();
    long.extend_from_slice(&[0; 100]);
    let (error, taken) = feed(&long, 10, None);
    match error {
        Err(IndexError::TooLarge { size, limit, .. }) => {
            assert_eq!(limit, exact as u64);
            assert!(size <= exact as u64 + 10, "{size}");
        }
        other => panic!("{other:?}"),
    }
    assert!(taken <= exact);
    // A dynamic index announced at 2 GiB: refused before anything but its head is taken.
    let (error, taken) = feed(&dynamic(&[10]), 16, Some(2 << 30));
    assert!(
        matches!(
            error,
            Err(IndexError::TooLarge {
                limit: MAX_INDEX_SIZE,
                ..
            })
        ),
        "{error:?}"
    );
    assert!(taken <= 16);
    // A fixed header claiming an image whose table would pass the largest index.
    let mut huge = fixed(4096, 4096);
    put_u64(&mut huge, 64, 1 << 50);
    let (error, _) = feed(&huge, 4096, None);
    assert!(
        matches!(error, Err(IndexError::TooLarge { .. })),
        "{error:?}"
    );
}

#[test]
fn a_file_that_is_no_index_is_refused_from_its_first_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // A 4 GiB image with a dynamic index's magic (sparse: nothing of it is on disk): its length
    // alone refuses it, before its table is read.
    let sparse = dir.path().join("big.didx");
    let head = dynamic(&[10]);
    std::fs::write(&sparse, &head[..4096]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&sparse)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let error = Index::open(&sparse).unwrap_err();
    assert!(
        matches!(error, IndexError::TooLarge { size, .. } if size == 4 << 30),
        "{error}"
    );
    assert!(
        error.to_string().contains("largest index cairn reads"),
        "{error}"
    );
    // An endless source of zeros: refused at the first piece read.
    let error = Index::open("/dev/zero").unwrap_err();
    assert!(matches!(error, IndexError::BadMagic { .. }), "{error}");
    // A folder.
    let error = Index::open(dir.path()).unwrap_err();
    assert!(matches!(error, IndexError::Read { .. }), "{error}");
}
