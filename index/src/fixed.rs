//! PBS fixed index (`.fidx`): a 4096-byte header, then one 32-byte SHA-256 digest per chunk of
//! `chunk_size` bytes (the last may be short).

use std::io::{Seek, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::atomic::AtomicFile;
use crate::bytes::{digest_at, read_index_file, u64_at};
use crate::error::{IndexError, Origin, Result};
use crate::index::{ChunkIndex, ChunkInfo, Chunks, Digest, DigestAlgorithm, IndexFormat};
use crate::open::OpenOptions;
use crate::pbs::{
    ChecksumCheck, FIXED_INDEX_MAGIC, PBS_HEADER_SIZE, PbsHeader, PbsMeta, check_header,
    write_header,
};

pub(crate) const SIZE_AT: usize = 64;
pub(crate) const CHUNK_SIZE_AT: usize = 72;
const DIGEST_SIZE: u64 = 32;

/// A validated PBS fixed index held in memory (one buffer; no allocation per entry).
#[derive(Debug, Clone)]
pub struct FixedIndex {
    data: Vec<u8>,
    meta: PbsMeta,
    size: u64,
    chunk_size: u64,
    count: usize,
}

impl FixedIndex {
    /// Reads and validates the fixed index at `path`.
    ///
    /// # Errors
    /// Any [`IndexError`] for an unreadable or invalid file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let (data, file) = read_index_file(path.as_ref())?;
        Self::from_bytes(data, file, &OpenOptions::default())
    }

    /// Validates a fixed index held in memory.
    ///
    /// # Errors
    /// Bad magic, truncation, a chunk size that is not a power of two, a length that does not
    /// match size and chunk size, or (unless skipped) a checksum mismatch.
    pub fn from_bytes(data: Vec<u8>, file: Origin, options: &OpenOptions) -> Result<Self> {
        check_header(&data, FIXED_INDEX_MAGIC, &file)?;
        let size = u64_at(&data, SIZE_AT).unwrap_or_default();
        let chunk_size = u64_at(&data, CHUNK_SIZE_AT).unwrap_or_default();
        if !chunk_size.is_power_of_two() {
            return Err(IndexError::ChunkSize { file, chunk_size });
        }
        let count = size.div_ceil(chunk_size);
        let expected = count
            .checked_mul(DIGEST_SIZE)
            .and_then(|t| t.checked_add(PBS_HEADER_SIZE as u64));
        if expected != Some(data.len() as u64) {
            return Err(IndexError::Length {
                file,
                len: data.len() as u64,
                reason: format!(
                    "an image of {size} bytes in chunks of {chunk_size} needs {count} digests, \
                     a file of {}",
                    expected.map_or_else(
                        || "more than 2^64 bytes".to_owned(),
                        |e| format!("{e} bytes")
                    )
                ),
            });
        }
        let count = usize::try_from(count).map_err(|_| IndexError::Length {
            file: file.clone(),
            len: data.len() as u64,
            reason: "the table does not fit this machine's address space".to_owned(),
        })?;
        let mut index = Self {
            meta: PbsMeta::read(&data, file),
            data,
            size,
            chunk_size,
            count,
        };
        if options.verify_checksum {
            let computed = index.computed_checksum();
            index.meta.verify(computed)?;
        }
        Ok(index)
    }

    /// The header's uuid and ctime.
    #[must_use]
    pub fn header(&self) -> &PbsHeader {
        &self.meta.header
    }

    /// The chunk size (a power of two); every chunk but the last has exactly this length.
    #[must_use]
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// The checksum stored in the header.
    #[must_use]
    pub fn stored_checksum(&self) -> [u8; 32] {
        self.meta.checksum
    }

    /// SHA-256 over the digest table, computed now.
    #[must_use]
    pub fn computed_checksum(&self) -> [u8; 32] {
        Sha256::digest(self.data.get(PBS_HEADER_SIZE..).unwrap_or_default()).into()
    }

    /// Whether the stored checksum matches the table (computes it if it was not checked at open).
    #[must_use]
    pub fn checksum_matches(&self) -> bool {
        self.meta.matches(|| self.computed_checksum())
    }

    /// Whether the checksum was checked at open.
    #[must_use]
    pub fn checksum_check(&self) -> ChecksumCheck {
        self.meta.check
    }

    /// Where the index came from.
    #[must_use]
    pub fn origin(&self) -> &Origin {
        &self.meta.file
    }

    fn digest(&self, index: usize) -> Option<Digest> {
        if index >= self.count {
            return None;
        }
        digest_at(&self.data, PBS_HEADER_SIZE + index * DIGEST_SIZE as usize)
    }
}

impl ChunkIndex for FixedIndex {
    fn format(&self) -> IndexFormat {
        IndexFormat::Fidx
    }

    fn digest_algorithm(&self) -> DigestAlgorithm {
        DigestAlgorithm::Sha256
    }

    fn chunk_count(&self) -> usize {
        self.count
    }

    fn image_size(&self) -> u64 {
        self.size
    }

    fn chunk(&self, index: usize) -> Option<ChunkInfo> {
        let digest = self.digest(index)?;
        let start = (index as u64).checked_mul(self.chunk_size)?;
        let end = start.saturating_add(self.chunk_size).min(self.size);
        Some(ChunkInfo {
            index,
            start,
            end,
            digest,
        })
    }

    fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        if offset >= self.size {
            return None;
        }
        let shift = self.chunk_size.trailing_zeros();
        let index = usize::try_from(offset >> shift).ok()?;
        Some((index, offset & (self.chunk_size - 1)))
    }

    fn chunks(&self) -> Chunks<'_> {
        Chunks::new(self)
    }
}

/// Writes a fixed index as digests arrive; the header (size and checksum) is written by
/// [`finish`](FixedIndexWriter::finish), which also checks that the digest count fits the size.
#[derive(Debug)]
pub struct FixedIndexWriter<W> {
    out: W,
    file: Origin,
    header: PbsHeader,
    chunk_size: u64,
    hasher: Sha256,
    pushed: u64,
}

impl FixedIndexWriter<AtomicFile> {
    /// Writes a fixed index to `path`, atomically: call [`finish`](FixedIndexWriter::finish) and
    /// then [`AtomicFile::commit`].
    ///
    /// # Errors
    /// A chunk size that is not a power of two, or a file that cannot be created.
    pub fn create(path: impl AsRef<Path>, chunk_size: u64) -> Result<Self> {
        let path = path.as_ref();
        let mut writer = Self::new(AtomicFile::create(path)?, chunk_size)?;
        writer.file = Origin::file(path);
        Ok(writer)
    }
}

impl<W: Write + Seek> FixedIndexWriter<W> {
    /// Starts a fixed index in `out` with a fresh header ([`PbsHeader::generate`]).
    ///
    /// # Errors
    /// A chunk size that is not a power of two, or a failed write.
    pub fn new(mut out: W, chunk_size: u64) -> Result<Self> {
        let file = Origin::memory();
        if !chunk_size.is_power_of_two() {
            return Err(IndexError::ChunkSize { file, chunk_size });
        }
        out.write_all(&[0u8; PBS_HEADER_SIZE])
            .map_err(|source| IndexError::Write {
                file: file.clone(),
                source,
            })?;
        Ok(Self {
            out,
            file,
            header: PbsHeader::generate(),
            chunk_size,
            hasher: Sha256::new(),
            pushed: 0,
        })
    }

    /// Uses `header` (uuid and ctime) instead of a generated one.
    pub fn set_header(&mut self, header: PbsHeader) {
        self.header = header;
    }

    /// Appends the digest of the next chunk.
    ///
    /// # Errors
    /// A failed write.
    pub fn push(&mut self, digest: &Digest) -> Result<()> {
        self.out
            .write_all(digest)
            .map_err(|source| IndexError::Write {
                file: self.file.clone(),
                source,
            })?;
        self.hasher.update(digest);
        self.pushed += 1;
        Ok(())
    }

    /// Writes the header for an image of `image_size` bytes and returns the output.
    ///
    /// # Errors
    /// [`IndexError::ChunkCount`] if the digests pushed do not cover exactly `image_size`
    /// bytes, or a failed write.
    pub fn finish(mut self, image_size: u64) -> Result<W> {
        let needed = image_size.div_ceil(self.chunk_size);
        if needed != self.pushed {
            return Err(IndexError::ChunkCount {
                file: self.file,
                pushed: self.pushed,
                needed,
                image_size,
                chunk_size: self.chunk_size,
            });
        }
        let checksum: [u8; 32] = self.hasher.finalize().into();
        let mut block = self.header.block(FIXED_INDEX_MAGIC, &checksum);
        block[SIZE_AT..SIZE_AT + 8].copy_from_slice(&image_size.to_le_bytes());
        block[CHUNK_SIZE_AT..CHUNK_SIZE_AT + 8].copy_from_slice(&self.chunk_size.to_le_bytes());
        write_header(&mut self.out, &block, &self.file)?;
        Ok(self.out)
    }
}
