//! PBS DataBlob: `magic[8] ‖ crc32[4]` (plus `iv[16] ‖ tag[16]` when encrypted), then the
//! payload, raw or zstd-compressed. The CRC-32 covers the payload only.

use std::io;

use crate::error::CodecError;

type Result<T> = std::result::Result<T, CodecError>;

/// Magic of an uncompressed blob: SHA-256("Proxmox Backup uncompressed blob v1.0")[..8].
pub const UNCOMPRESSED_BLOB_MAGIC: [u8; 8] = [0x42, 0xab, 0x38, 0x07, 0xbe, 0x83, 0x70, 0xa1];
/// Magic of a zstd blob: SHA-256("Proxmox Backup zstd compressed blob v1.0")[..8].
pub const COMPRESSED_BLOB_MAGIC: [u8; 8] = [0x31, 0xb9, 0x58, 0x42, 0x6f, 0xb6, 0xa3, 0x7f];
/// Magic of an encrypted blob: SHA-256("Proxmox Backup encrypted blob v1.0")[..8].
pub const ENCRYPTED_BLOB_MAGIC: [u8; 8] = [0x7b, 0x67, 0x85, 0xbe, 0x22, 0x2d, 0x4c, 0xf0];
/// Magic of an encrypted zstd blob: SHA-256("Proxmox Backup zstd compressed encrypted blob
/// v1.0")[..8].
pub const ENCRYPTED_COMPRESSED_BLOB_MAGIC: [u8; 8] =
    [0xe6, 0x59, 0x1b, 0xbf, 0x0b, 0xbf, 0xd8, 0x0b];

/// PBS's cap on a blob (and on a chunk): 128 MiB.
pub const MAX_BLOB_SIZE: usize = 128 * 1024 * 1024;

/// Header of a plain blob: magic and CRC.
pub const BLOB_HEADER_SIZE: usize = 12;
/// Header of an encrypted blob: magic, CRC, IV and tag.
pub const ENCRYPTED_BLOB_HEADER_SIZE: usize = 44;

/// The zstd level PBS compresses with.
const ZSTD_LEVEL: i32 = 1;

/// What kind of blob some bytes are, by their magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobKind {
    /// Raw payload.
    Uncompressed,
    /// zstd payload.
    Compressed,
    /// Encrypted payload.
    Encrypted,
    /// Encrypted zstd payload.
    EncryptedCompressed,
}

impl BlobKind {
    /// The kind of blob `bytes` are, or `None` for no known magic.
    #[must_use]
    pub fn of(bytes: &[u8]) -> Option<Self> {
        let magic: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        match magic {
            UNCOMPRESSED_BLOB_MAGIC => Some(Self::Uncompressed),
            COMPRESSED_BLOB_MAGIC => Some(Self::Compressed),
            ENCRYPTED_BLOB_MAGIC => Some(Self::Encrypted),
            ENCRYPTED_COMPRESSED_BLOB_MAGIC => Some(Self::EncryptedCompressed),
            _ => None,
        }
    }
}

/// Encodes `plaintext` as PBS does: zstd level 1, kept only if smaller than the raw form.
///
/// # Errors
/// [`CodecError::TooLarge`] over 128 MiB.
pub fn encode_blob(plaintext: &[u8]) -> Result<Vec<u8>> {
    check_plaintext_size(plaintext)?;
    // Not worth trying to compress when the output could not be smaller anyway.
    if let Ok(compressed) = zstd::bulk::compress(plaintext, ZSTD_LEVEL)
        && compressed.len() < plaintext.len()
    {
        return Ok(assemble(COMPRESSED_BLOB_MAGIC, &compressed));
    }
    Ok(assemble(UNCOMPRESSED_BLOB_MAGIC, plaintext))
}

/// Encodes `plaintext` as an uncompressed blob.
///
/// # Errors
/// [`CodecError::TooLarge`] over 128 MiB.
pub fn encode_blob_uncompressed(plaintext: &[u8]) -> Result<Vec<u8>> {
    check_plaintext_size(plaintext)?;
    Ok(assemble(UNCOMPRESSED_BLOB_MAGIC, plaintext))
}

fn check_plaintext_size(plaintext: &[u8]) -> Result<()> {
    if plaintext.len() > MAX_BLOB_SIZE {
        return Err(CodecError::TooLarge {
            what: "chunk",
            size: plaintext.len() as u64,
            limit: MAX_BLOB_SIZE as u64,
        });
    }
    Ok(())
}

fn assemble(magic: [u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(BLOB_HEADER_SIZE + payload.len());
    blob.extend_from_slice(&magic);
    blob.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    blob.extend_from_slice(payload);
    blob
}

/// Decodes a blob to its plaintext, which may be at most `max_len` bytes (callers pass the
/// length the index promises). Checks the magic, the size limits (before allocating) and the
/// CRC-32. Encrypted blobs give [`CodecError::Encrypted`].
///
/// # Errors
/// [`CodecError::UnknownFormat`], [`CodecError::Truncated`], [`CodecError::TooLarge`],
/// [`CodecError::CrcMismatch`], [`CodecError::Encrypted`], [`CodecError::Decompress`].
pub fn decode_blob(blob: &[u8], max_len: usize) -> Result<Vec<u8>> {
    let (head, payload) = checked_payload(blob)?;
    let limit = max_len.min(MAX_BLOB_SIZE);
    match BlobKind::of(head) {
        Some(BlobKind::Uncompressed) => {
            if payload.len() > limit {
                return Err(CodecError::TooLarge {
                    what: "decoded chunk",
                    size: payload.len() as u64,
                    limit: limit as u64,
                });
            }
            Ok(payload.to_vec())
        }
        Some(BlobKind::Compressed) => decode_zstd(payload, limit),
        _ => Err(CodecError::Encrypted {
            magic: if head[..8] == ENCRYPTED_COMPRESSED_BLOB_MAGIC {
                "encrypted zstd"
            } else {
                "encrypted"
            },
        }),
    }
}

/// The header and payload of a blob of a known magic, after checking its size limits and
/// its CRC-32 (which covers the payload: the ciphertext of an encrypted blob).
pub(crate) fn checked_payload(blob: &[u8]) -> Result<(&[u8], &[u8])> {
    let kind = BlobKind::of(blob).ok_or_else(|| CodecError::UnknownFormat {
        found: first_bytes(blob),
    })?;
    let header = match kind {
        BlobKind::Encrypted | BlobKind::EncryptedCompressed => ENCRYPTED_BLOB_HEADER_SIZE,
        _ => BLOB_HEADER_SIZE,
    };
    if blob.len() < header {
        return Err(CodecError::Truncated {
            len: blob.len(),
            needed: header,
        });
    }
    if blob.len() > MAX_BLOB_SIZE + header {
        return Err(CodecError::TooLarge {
            what: "blob",
            size: blob.len() as u64,
            limit: (MAX_BLOB_SIZE + header) as u64,
        });
    }
    let (head, payload) = blob.split_at(header);
    let expected = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    let actual = crc32fast::hash(payload);
    if expected != actual {
        return Err(CodecError::CrcMismatch { expected, actual });
    }
    Ok((head, payload))
}

/// Decompresses one zstd frame of at most `limit` bytes: a frame that declares more is refused
/// before allocating, and one without a declared size gets a buffer of `limit` and no more.
pub(crate) fn decode_zstd(payload: &[u8], limit: usize) -> Result<Vec<u8>> {
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(payload)
        && size > limit as u64
    {
        return Err(CodecError::TooLarge {
            what: "decoded chunk",
            size,
            limit: limit as u64,
        });
    }
    let mut output = Vec::with_capacity(limit);
    // One decompression context per thread: making one costs more than decoding a small chunk.
    // Each frame starts a fresh session, so a context that saw a bad frame decodes the next.
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(decompressor) => decompressor,
            None => slot.insert(zstd::bulk::Decompressor::new().map_err(zstd_error)?),
        };
        // A frame larger than `limit` fails here ("destination buffer is too small") without
        // the buffer growing.
        decompressor
            .decompress_to_buffer(payload, &mut output)
            .map_err(zstd_error)
    })?;
    Ok(output)
}

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn zstd_error(source: io::Error) -> CodecError {
    CodecError::Decompress {
        codec: "zstd",
        source,
    }
}

pub(crate) fn first_bytes(bytes: &[u8]) -> String {
    crate::digest::to_hex(&bytes[..bytes.len().min(8)])
}
