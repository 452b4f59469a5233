//! casync chunk files (`.cacnk`): one compressed stream and nothing else. casync writes zstd
//! (frames without a content size or checksum), xz or gzip, told apart by their magic;
//! uncompressed chunks are files named by the id alone.

use std::io::{self, Write};

use crate::blob::{decode_zstd, first_bytes};
use crate::error::CodecError;

type Result<T> = std::result::Result<T, CodecError>;

/// zstd frame magic.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// xz stream magic.
pub const XZ_MAGIC: [u8; 6] = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
/// gzip member magic.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The zstd level cairn writes casync chunks with (casync's default is 3 as well).
const ZSTD_LEVEL: i32 = 3;

/// How a casync chunk file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CasyncCompression {
    /// zstd.
    Zstd,
    /// xz.
    Xz,
    /// gzip.
    Gzip,
}

impl CasyncCompression {
    /// The compression of `bytes`, by magic.
    #[must_use]
    pub fn of(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(&ZSTD_MAGIC) {
            Some(Self::Zstd)
        } else if bytes.starts_with(&XZ_MAGIC) {
            Some(Self::Xz)
        } else if bytes.starts_with(&GZIP_MAGIC) {
            Some(Self::Gzip)
        } else {
            None
        }
    }
}

/// Compresses a chunk as a casync `.cacnk` file (zstd).
///
/// # Errors
/// [`CodecError::Compress`] if zstd refuses (it does not for in-memory input).
pub fn encode_casync_chunk(plaintext: &[u8]) -> Result<Vec<u8>> {
    zstd::bulk::compress(plaintext, ZSTD_LEVEL).map_err(|source| CodecError::Compress {
        codec: "zstd",
        source,
    })
}

/// Decompresses a `.cacnk` file of at most `max_len` decoded bytes (the caller passes the length
/// the index promises: casync's frames do not say).
///
/// # Errors
/// [`CodecError::UnknownFormat`] for no known magic, [`CodecError::TooLarge`] past `max_len`,
/// [`CodecError::Decompress`] for a broken stream, [`CodecError::CodecDisabled`] for a codec
/// left out of this build.
pub fn decode_casync_chunk(bytes: &[u8], max_len: usize) -> Result<Vec<u8>> {
    match CasyncCompression::of(bytes) {
        Some(CasyncCompression::Zstd) => decode_zstd(bytes, max_len),
        Some(CasyncCompression::Xz) => decode_xz(bytes, max_len),
        Some(CasyncCompression::Gzip) => decode_gzip(bytes, max_len),
        None => Err(CodecError::UnknownFormat {
            found: first_bytes(bytes),
        }),
    }
}

/// A writer that refuses to grow past a limit, so no stream can make a decoder allocate more
/// than the caller expects.
struct Bounded {
    output: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.output.len() + buf.len() > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("decoded data is longer than expected"));
        }
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Bounded {
    fn new(limit: usize) -> Self {
        Self {
            output: Vec::with_capacity(limit.min(1 << 20)),
            limit,
            overflowed: false,
        }
    }

    fn finish(self, codec: &'static str, result: io::Result<()>) -> Result<Vec<u8>> {
        match result {
            Ok(()) => Ok(self.output),
            Err(_) if self.overflowed => Err(CodecError::TooLarge {
                what: "decoded chunk",
                size: self.limit as u64 + 1,
                limit: self.limit as u64,
            }),
            Err(source) => Err(CodecError::Decompress { codec, source }),
        }
    }
}

/// The most memory the xz decoder may use (its dictionary): casync's chunks need far less, and
/// a hostile header must not make it allocate more.
#[cfg(feature = "xz")]
const XZ_MEMORY_LIMIT: u64 = 64 << 20;

#[cfg(feature = "xz")]
fn decode_xz(bytes: &[u8], max_len: usize) -> Result<Vec<u8>> {
    let stream =
        liblzma::stream::Stream::new_stream_decoder(XZ_MEMORY_LIMIT, liblzma::stream::CONCATENATED)
            .map_err(|e| CodecError::Decompress {
                codec: "xz",
                source: io::Error::other(e),
            })?;
    let mut output = Bounded::new(max_len);
    let mut decoder = liblzma::read::XzDecoder::new_stream(bytes, stream);
    let result = io::copy(&mut decoder, &mut output).map(drop);
    output.finish("xz", result)
}

#[cfg(not(feature = "xz"))]
fn decode_xz(_: &[u8], _: usize) -> Result<Vec<u8>> {
    Err(CodecError::CodecDisabled {
        codec: "xz",
        feature: "xz",
    })
}

#[cfg(feature = "gzip")]
fn decode_gzip(bytes: &[u8], max_len: usize) -> Result<Vec<u8>> {
    let mut output = Bounded::new(max_len);
    let mut decoder = flate2::read::MultiGzDecoder::new(bytes);
    let result = io::copy(&mut decoder, &mut output).map(drop);
    output.finish("gzip", result)
}

#[cfg(not(feature = "gzip"))]
fn decode_gzip(_: &[u8], _: usize) -> Result<Vec<u8>> {
    Err(CodecError::CodecDisabled {
        codec: "gzip",
        feature: "gzip",
    })
}
