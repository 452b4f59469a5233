//! Checks for arbitrary bytes taken as an encoded chunk (feature `testing`): the bodies of the
//! fuzz targets, and of the tests that replay what fuzzing found.

#![allow(clippy::panic)] // a check: a broken invariant is a panic

use crate::{decode_blob, decode_casync_chunk, encode_blob, encode_casync_chunk};

/// The decoding limit a check uses: the first two bytes, little-endian (so a fuzzer can steer
/// it), over the rest of the input.
fn split(data: &[u8]) -> (usize, &[u8]) {
    match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, data),
    }
}

/// Decodes the input as a PBS blob: never more than the limit; a decoded blob re-encodes and
/// decodes to the same bytes; the raw input round-trips through `encode_blob`.
///
/// # Panics
/// If a codec invariant breaks.
pub fn check_blob_bytes(data: &[u8]) {
    let (limit, bytes) = split(data);
    if let Ok(plaintext) = decode_blob(bytes, limit) {
        assert!(
            plaintext.len() <= limit,
            "decoded {} bytes past the limit {limit}",
            plaintext.len()
        );
        let again = encode_blob(&plaintext).unwrap_or_else(|e| panic!("re-encoding failed: {e}"));
        assert_eq!(
            decode_blob(&again, plaintext.len()).ok().as_deref(),
            Some(&plaintext[..])
        );
    }
    let encoded = encode_blob(bytes).unwrap_or_else(|e| panic!("encoding failed: {e}"));
    assert_eq!(
        decode_blob(&encoded, bytes.len()).ok().as_deref(),
        Some(bytes),
        "round trip"
    );
}

/// Decodes the input as a casync chunk file: never more than the limit; the raw input
/// round-trips through `encode_casync_chunk`.
///
/// # Panics
/// If a codec invariant breaks.
pub fn check_casync_chunk_bytes(data: &[u8]) {
    let (limit, bytes) = split(data);
    if let Ok(plaintext) = decode_casync_chunk(bytes, limit) {
        assert!(
            plaintext.len() <= limit,
            "decoded {} bytes past the limit {limit}",
            plaintext.len()
        );
    }
    let encoded = encode_casync_chunk(bytes).unwrap_or_else(|e| panic!("encoding failed: {e}"));
    assert_eq!(
        decode_casync_chunk(&encoded, bytes.len()).ok().as_deref(),
        Some(bytes),
        "round trip"
    );
}

/// Decrypts the input as an encrypted blob with a fixed key under a size limit (the first two
/// bytes): never more than the limit and never a panic; and the rest, encrypted, decrypts back.
///
/// # Panics
/// If a codec invariant breaks.
#[cfg(feature = "crypto")]
pub fn check_encrypted_blob_bytes(data: &[u8]) {
    let key = crate::CryptKey::new([0x5a; 32]);
    let (limit, bytes) = split(data);
    if let Ok(plaintext) = key.decrypt(bytes, limit) {
        assert!(plaintext.len() <= limit, "decrypted past the limit {limit}");
    }
    let blob = key
        .encrypt(bytes)
        .unwrap_or_else(|e| panic!("encrypting failed: {e}"));
    assert_eq!(
        key.decrypt(&blob, bytes.len()).ok().as_deref(),
        Some(bytes),
        "round trip"
    );
}

/// Takes the input as a key file: parsing never panics, and a file that parses writes out as
/// JSON that parses to the same protection, data and fingerprint.
///
/// # Panics
/// If that breaks.
#[cfg(feature = "crypto")]
pub fn check_key_file_bytes(data: &[u8]) {
    if let Ok(file) = crate::KeyFile::parse(data) {
        let again = crate::KeyFile::parse(file.to_json().as_bytes())
            .unwrap_or_else(|e| panic!("a parsed key file does not parse again: {e}"));
        assert_eq!(again.kdf(), file.kdf());
        assert_eq!(again.fingerprint(), file.fingerprint());
        assert_eq!(again.to_json(), file.to_json());
    }
}
