//! PBS dynamic index (`.didx`): a 4096-byte header, then 40-byte entries (end offset, SHA-256
//! digest) of content-defined chunks.

use std::io::{Seek, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::atomic::AtomicFile;
use crate::bytes::read_index_file;
use crate::error::{IndexError, Origin, Result};
use crate::index::{ChunkIndex, ChunkInfo, Chunks, Digest, DigestAlgorithm, IndexFormat};
use crate::open::OpenOptions;
use crate::pbs::{
    ChecksumCheck, DYNAMIC_INDEX_MAGIC, PBS_HEADER_SIZE, PbsHeader, PbsMeta, check_header,
    write_header,
};
use crate::table::{ENTRY_SIZE, EndTable, next_entry};

/// A validated PBS dynamic index held in memory (one buffer; no allocation per entry).
#[derive(Debug, Clone)]
pub struct DynamicIndex {
    data: Vec<u8>,
    meta: PbsMeta,
    table: EndTable,
}

impl DynamicIndex {
    /// Reads and validates the dynamic index at `path`.
    ///
    /// # Errors
    /// Any [`IndexError`] for an unreadable or invalid file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let (data, file) = read_index_file(path.as_ref())?;
        Self::from_bytes(data, file, &OpenOptions::default())
    }

    /// Validates a dynamic index held in memory.
    ///
    /// # Errors
    /// Bad magic, truncation, a table that is not a whole number of entries, end offsets that
    /// do not strictly increase, or (unless skipped) a checksum mismatch.
    pub fn from_bytes(data: Vec<u8>, file: Origin, options: &OpenOptions) -> Result<Self> {
        check_header(&data, DYNAMIC_INDEX_MAGIC, &file)?;
        let table_len = data.len() - PBS_HEADER_SIZE;
        if !table_len.is_multiple_of(ENTRY_SIZE) {
            return Err(IndexError::Length {
                file,
                len: data.len() as u64,
                reason: format!(
                    "the {table_len} bytes after the header are not a whole number of \
                     {ENTRY_SIZE}-byte entries"
                ),
            });
        }
        let table =
            EndTable::validate(&data, PBS_HEADER_SIZE, table_len / ENTRY_SIZE, None, &file)?;
        let mut index = Self {
            meta: PbsMeta::read(&data, file),
            data,
            table,
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

    /// The checksum stored in the header.
    #[must_use]
    pub fn stored_checksum(&self) -> [u8; 32] {
        self.meta.checksum
    }

    /// SHA-256 over the raw entries, computed now.
    #[must_use]
    pub fn computed_checksum(&self) -> [u8; 32] {
        Sha256::digest(self.table.bytes(&self.data)).into()
    }

    /// Whether the stored checksum matches the entries (computes it if it was not checked at
    /// open).
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
}

impl ChunkIndex for DynamicIndex {
    fn format(&self) -> IndexFormat {
        IndexFormat::Didx
    }

    fn digest_algorithm(&self) -> DigestAlgorithm {
        DigestAlgorithm::Sha256
    }

    fn chunk_count(&self) -> usize {
        self.table.count()
    }

    fn image_size(&self) -> u64 {
        self.table.image_size(&self.data)
    }

    fn chunk(&self, index: usize) -> Option<ChunkInfo> {
        self.table.chunk(&self.data, index)
    }

    fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        self.table.locate(&self.data, offset)
    }

    fn chunks(&self) -> Chunks<'_> {
        Chunks::new(self)
    }
}

/// Writes a dynamic index as chunks arrive; [`finish`](DynamicIndexWriter::finish) writes the
/// header with the checksum computed on the way.
#[derive(Debug)]
pub struct DynamicIndexWriter<W> {
    out: W,
    file: Origin,
    header: PbsHeader,
    hasher: Sha256,
    last_end: u64,
    pushed: u64,
}

impl DynamicIndexWriter<AtomicFile> {
    /// Writes a dynamic index to `path`, atomically: call
    /// [`finish`](DynamicIndexWriter::finish) and then [`AtomicFile::commit`].
    ///
    /// # Errors
    /// A file that cannot be created.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut writer = Self::new(AtomicFile::create(path)?)?;
        writer.file = Origin::file(path);
        Ok(writer)
    }
}

impl<W: Write + Seek> DynamicIndexWriter<W> {
    /// Starts a dynamic index in `out` with a fresh header ([`PbsHeader::generate`]).
    ///
    /// # Errors
    /// A failed write.
    pub fn new(mut out: W) -> Result<Self> {
        let file = Origin::memory();
        out.write_all(&[0u8; PBS_HEADER_SIZE])
            .map_err(|source| IndexError::Write {
                file: file.clone(),
                source,
            })?;
        Ok(Self {
            out,
            file,
            header: PbsHeader::generate(),
            hasher: Sha256::new(),
            last_end: 0,
            pushed: 0,
        })
    }

    /// Uses `header` (uuid and ctime) instead of a generated one.
    pub fn set_header(&mut self, header: PbsHeader) {
        self.header = header;
    }

    /// Appends the next chunk, which ends at image offset `end` (exclusive).
    ///
    /// # Errors
    /// [`IndexError::EndsNotIncreasing`] if `end` is not past the previous end (chunks are never
    /// empty), or a failed write.
    pub fn push(&mut self, end: u64, digest: &Digest) -> Result<()> {
        let entry = next_entry(
            &self.file,
            PBS_HEADER_SIZE as u64,
            self.pushed,
            self.last_end,
            end,
            digest,
        )?;
        self.out
            .write_all(&entry)
            .map_err(|source| IndexError::Write {
                file: self.file.clone(),
                source,
            })?;
        self.hasher.update(entry);
        self.last_end = end;
        self.pushed += 1;
        Ok(())
    }

    /// Writes the header and returns the output.
    ///
    /// # Errors
    /// A failed write.
    pub fn finish(mut self) -> Result<W> {
        let checksum: [u8; 32] = self.hasher.finalize().into();
        let block = self.header.block(DYNAMIC_INDEX_MAGIC, &checksum);
        write_header(&mut self.out, &block, &self.file)?;
        Ok(self.out)
    }
}
