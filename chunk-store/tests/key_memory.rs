//! Key material leaves no copy behind in freed memory: after a key file is parsed and its key
//! used and dropped, neither the key file's base64 text nor the raw key is anywhere in the
//! heap. A program of its own (no test harness), so that one thread makes every allocation and
//! all of them are in the main heap, which it reads back through `/proc/self/mem`.

#![allow(clippy::unwrap_used, clippy::panic)] // a failure is the test failing

use std::io::{Read as _, Seek as _, SeekFrom};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cairn_chunk_store::KeyFile;
use zeroize::Zeroizing;

/// The key, as constants in the program's image (not the heap).
const RAW_KEY: [u8; 32] = *b"cairn key that must not linger!!";

/// What reading the heap needs, allocated before the key material is, so that reading it
/// allocates nothing that could reuse (and overwrite) a freed block.
struct Reader {
    maps: String,
    copy: Vec<u8>,
}

impl Reader {
    fn new() -> Self {
        Self {
            maps: String::with_capacity(1 << 16),
            // Large enough to be mapped on its own, away from the heap it copies.
            copy: vec![0u8; 64 << 20],
        }
    }

    /// The bytes of the main heap (`[heap]` in `/proc/self/maps`).
    fn heap(&mut self) -> &[u8] {
        std::fs::File::open("/proc/self/maps")
            .unwrap()
            .read_to_string(&mut self.maps)
            .unwrap();
        let line = self.maps.lines().find(|l| l.ends_with("[heap]")).unwrap();
        let range = line.split_whitespace().next().unwrap();
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let copy = &mut self.copy[..usize::try_from(end - start).unwrap()];
        let mut memory = std::fs::File::open("/proc/self/mem").unwrap();
        memory.seek(SeekFrom::Start(start)).unwrap();
        memory.read_exact(copy).unwrap();
        copy
    }
}

fn found(heap: &[u8], needle: &[u8]) -> bool {
    heap.windows(needle.len()).any(|w| w == needle)
}

fn main() {
    let mut reader = Reader::new();
    // The base64 text, kept on the stack and masked, so only what cairn copies is in the heap.
    let mut text = [0u8; 44];
    BASE64.encode_slice(RAW_KEY, &mut text).unwrap();
    let masked = text.map(|b| b ^ 0x5a);
    text.fill(0);
    {
        let mut json = Zeroizing::new(Vec::with_capacity(512));
        json.extend_from_slice(
            br#"{"kdf":null,"created":"2026-12-08T00:00:00Z","modified":"2026-12-08T00:00:00Z","data":""#,
        );
        json.extend(masked.iter().map(|b| b ^ 0x5a));
        json.extend_from_slice(br#""}"#);
        let file = KeyFile::parse(&json).unwrap();
        let key = Arc::new(file.decrypt(None).unwrap());
        // Used, as a backup uses it.
        let blob = key.encrypt(&[7u8; 4096]).unwrap();
        assert_eq!(key.decrypt(&blob, 4096).unwrap(), vec![7u8; 4096]);
        drop((file, key));
    }
    let heap = reader.heap();
    // The allocator writes its own links over the first 16 bytes of a freed block: the rest
    // of the text, 28 characters, is what would be left of a block that held it.
    let mut needle = masked.map(|b| b ^ 0x5a);
    let base64_left = found(heap, &needle[16..]);
    needle.fill(0);
    // The raw key: as the key itself, or as the first two round keys of AES-256's schedule
    // (which are the key, where the processor's AES instructions are used).
    let key_left = found(heap, &RAW_KEY);
    assert!(
        !base64_left && !key_left,
        "left in freed memory: base64 text {base64_left}, raw key {key_left}"
    );
    println!(
        "key material: none left in the heap ({} bytes read)",
        heap.len()
    );
}
