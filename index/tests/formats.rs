//! The format facts of the project's format notes, each checked against cairn's constants and
//! against bytes cairn's writers produce.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::io::Cursor;

use cairn_index::format::*;
use cairn_index::*;

fn sha256(data: &[u8]) -> [u8; 32] {
    DigestAlgorithm::Sha256.digest(data)
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().unwrap())
}

#[test]
fn pbs_index_magics_are_the_first_bytes_of_sha256_of_their_strings() {
    let fixed = sha256(b"Proxmox Backup fixed sized chunk index v1.0");
    let dynamic = sha256(b"Proxmox Backup dynamic sized chunk index v1.0");
    assert_eq!(fixed[..8], FIXED_INDEX_MAGIC);
    assert_eq!(dynamic[..8], DYNAMIC_INDEX_MAGIC);
    assert_eq!(hex(&FIXED_INDEX_MAGIC), "2f7f41ed91fd0fcd");
    assert_eq!(hex(&DYNAMIC_INDEX_MAGIC), "1c914ea519bab3cd");
}

#[test]
fn zero_chunk_digests() {
    assert_eq!(
        hex(&sha256(&vec![0u8; 4 << 20])),
        "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"
    );
    assert_eq!(
        hex(&sha256(&vec![0u8; 1 << 20])),
        "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58"
    );
    assert_eq!(
        hex(&sha256(&vec![0u8; 64 << 10])),
        "de2f256064a0af797747c2b97505dc0b9f3df0de4f489eac731c23ae9ca9cc31"
    );
}

#[test]
fn casync_constants() {
    assert_eq!(CASYNC_HEADER_SIZE, 0x30);
    assert_eq!(CA_FORMAT_INDEX, 0x9682_4d9c_7b12_9ff9);
    assert_eq!(CA_FORMAT_TABLE, 0xe75b_9e11_2f17_417d);
    assert_eq!(CA_FORMAT_TABLE_TAIL_MARKER, 0x4b4f_050e_5549_ecd1);
    assert_eq!(CA_FORMAT_SHA512_256, 0x2000_0000_0000_0000);
    assert_eq!(CASYNC_DEFAULT_FLAGS, 0xb000_0000_0000_0000);
    assert_eq!(CASYNC_SHA256_FLAGS, 0x9000_0000_0000_0000);
    assert_eq!(CASYNC_CHUNK_SIZE_LIMIT, 128 << 20);
    assert_eq!(CasyncParams::DEFAULT.min, 0x4000);
    assert_eq!(CasyncParams::DEFAULT.avg, 0x10000);
    assert_eq!(CasyncParams::DEFAULT.max, 0x40000);
    let avg = CasyncParams::with_avg(1 << 20, DigestAlgorithm::Sha256);
    assert_eq!((avg.min, avg.max), (256 << 10, 4 << 20));
    assert_eq!(avg.digest_algorithm(), DigestAlgorithm::Sha256);
}

#[test]
fn fixed_index_layout() {
    let header = PbsHeader {
        uuid: [0xab; 16],
        ctime: 1_715_091_951,
    };
    let digests = [[1u8; 32], [2; 32], [3; 32]];
    let mut writer = FixedIndexWriter::new(Cursor::new(Vec::new()), 1 << 20).unwrap();
    writer.set_header(header);
    for d in &digests {
        writer.push(d).unwrap();
    }
    let bytes = writer.finish((2 << 20) + 5).unwrap().into_inner();
    // 4096-byte header + 32 bytes per chunk, n = ceil(size / chunk_size) = 3.
    assert_eq!(bytes.len(), 4096 + 32 * 3);
    assert_eq!(bytes[..8], FIXED_INDEX_MAGIC);
    assert_eq!(bytes[8..24], [0xab; 16]);
    assert_eq!(u64_at(&bytes, 24), 1_715_091_951);
    assert_eq!(bytes[32..64], sha256(&digests.concat()));
    assert_eq!(u64_at(&bytes, 64), (2 << 20) + 5);
    assert_eq!(u64_at(&bytes, 72), 1 << 20);
    assert!(
        bytes[80..4096].iter().all(|&b| b == 0),
        "reserved bytes are zero"
    );
    assert_eq!(bytes[4096..4128], [1; 32]);
    let index = FixedIndex::from_bytes(bytes, Origin::memory(), &OpenOptions::default()).unwrap();
    assert_eq!(index.header(), &header);
    assert_eq!(index.chunk(2).unwrap().range(), (2 << 20)..((2 << 20) + 5));
    assert_eq!(index.checksum_check(), ChecksumCheck::Verified);
}

#[test]
fn dynamic_index_layout() {
    let mut writer = DynamicIndexWriter::new(Cursor::new(Vec::new())).unwrap();
    writer.push(1000, &[7; 32]).unwrap();
    writer.push(5000, &[8; 32]).unwrap();
    let bytes = writer.finish().unwrap().into_inner();
    assert_eq!(bytes.len(), 4096 + 40 * 2);
    assert_eq!(bytes[..8], DYNAMIC_INDEX_MAGIC);
    assert_eq!(u64_at(&bytes, 4096), 1000);
    assert_eq!(bytes[4104..4136], [7; 32]);
    assert_eq!(u64_at(&bytes, 4136), 5000);
    // index_csum = SHA-256 over the raw entries.
    assert_eq!(bytes[32..64], sha256(&bytes[4096..]));
    assert!(bytes[64..4096].iter().all(|&b| b == 0));
}

#[test]
fn casync_index_layout() {
    let mut writer = CasyncIndexWriter::new(Vec::new(), CasyncParams::DEFAULT).unwrap();
    writer.push(0x5000, &[9; 32]).unwrap();
    let bytes = writer.finish().unwrap();
    // N = (len - 104) / 40.
    assert_eq!(bytes.len(), 104 + 40);
    let fields: Vec<u64> = (0..8).map(|i| u64_at(&bytes, i * 8)).collect();
    assert_eq!(
        fields,
        [
            0x30,
            CA_FORMAT_INDEX,
            0xb000_0000_0000_0000,
            0x4000,
            0x10000,
            0x40000,
            u64::MAX,
            CA_FORMAT_TABLE
        ]
    );
    assert_eq!(u64_at(&bytes, 0x40), 0x5000);
    let tail = bytes.len() - 40;
    let tail_fields: Vec<u64> = (0..5).map(|i| u64_at(&bytes, tail + i * 8)).collect();
    assert_eq!(
        tail_fields,
        [
            0,
            0,
            0x30,
            bytes.len() as u64 - 48,
            CA_FORMAT_TABLE_TAIL_MARKER
        ]
    );
    // An empty blob's index is 104 bytes.
    let empty = CasyncIndexWriter::new(Vec::new(), CasyncParams::DEFAULT)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(empty.len(), 104);
    let index = CasyncIndex::from_bytes(empty, Origin::memory()).unwrap();
    assert_eq!((index.chunk_count(), index.image_size()), (0, 0));
    assert_eq!(index.locate(0), None);
}

#[test]
fn casync_digest_flag_selects_the_algorithm_and_other_bits_are_ignored() {
    for (flags, expected) in [
        (0xb000_0000_0000_0000, DigestAlgorithm::Sha512_256),
        (0x9000_0000_0000_0000, DigestAlgorithm::Sha256),
        (0xa000_0000_0000_0000, DigestAlgorithm::Sha512_256),
        (0xb000_0001_ffef_fe26, DigestAlgorithm::Sha512_256),
    ] {
        let params = CasyncParams {
            flags,
            ..CasyncParams::DEFAULT
        };
        let bytes = CasyncIndexWriter::new(Vec::new(), params)
            .unwrap()
            .finish()
            .unwrap();
        let index = CasyncIndex::from_bytes(bytes, Origin::memory()).unwrap();
        assert_eq!(index.digest_algorithm(), expected, "{flags:#x}");
    }
}
