//! casync indexes (`.caibx` for blobs, `.caidx` for directory archives): a 48-byte header, a
//! table header, 40-byte entries (end offset, chunk id), and a 40-byte tail.

use std::io::Write;
use std::path::Path;

use crate::atomic::AtomicFile;
use crate::bytes::{magic_of, read_index_file, u64_at};
use crate::error::{Hex, IndexError, Origin, Result};
use crate::index::{ChunkIndex, ChunkInfo, Chunks, Digest, DigestAlgorithm, IndexFormat};
use crate::table::{ENTRY_SIZE, EndTable, next_entry};

/// The header's size, its first field.
pub const CASYNC_HEADER_SIZE: u64 = 0x30;
/// `CA_FORMAT_INDEX`: the header's type field.
pub const CA_FORMAT_INDEX: u64 = 0x9682_4d9c_7b12_9ff9;
/// `CA_FORMAT_TABLE`: the table header's type field.
pub const CA_FORMAT_TABLE: u64 = 0xe75b_9e11_2f17_417d;
/// The marker that ends the tail.
pub const CA_FORMAT_TABLE_TAIL_MARKER: u64 = 0x4b4f_050e_5549_ecd1;
/// The feature flag that selects SHA-512/256 chunk ids (clear: SHA-256).
pub const CA_FORMAT_SHA512_256: u64 = 0x2000_0000_0000_0000;
/// The largest chunk size casync accepts.
pub const CASYNC_CHUNK_SIZE_LIMIT: u64 = 128 * 1024 * 1024;
/// Feature flags `casync make` writes by default (SHA-512/256).
pub const CASYNC_DEFAULT_FLAGS: u64 = 0xb000_0000_0000_0000;
/// Feature flags `casync make --digest=sha256` writes.
pub const CASYNC_SHA256_FLAGS: u64 = 0x9000_0000_0000_0000;

const FLAGS_AT: usize = 0x10;
const MIN_AT: usize = 0x18;
const AVG_AT: usize = 0x20;
const MAX_AT: usize = 0x28;
const TABLE_SIZE_AT: usize = 0x30;
const TABLE_TYPE_AT: usize = 0x38;
const ENTRIES_AT: usize = 0x40;
const TAIL_SIZE: usize = 40;
/// An index with no entries: header, table header and tail.
const EMPTY_LEN: usize = ENTRIES_AT + TAIL_SIZE;

/// Chunk size limits and feature flags of a casync index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasyncParams {
    /// The feature flags; bit [`CA_FORMAT_SHA512_256`] selects the digest, the rest is carried.
    pub flags: u64,
    /// Minimum chunk size.
    pub min: u64,
    /// Average chunk size.
    pub avg: u64,
    /// Maximum chunk size.
    pub max: u64,
}

impl CasyncParams {
    /// casync's defaults: 16 KiB / 64 KiB / 256 KiB, SHA-512/256.
    pub const DEFAULT: Self = Self {
        flags: CASYNC_DEFAULT_FLAGS,
        min: 16 * 1024,
        avg: 64 * 1024,
        max: 256 * 1024,
    };

    /// What `casync make --chunk-size=AVG [--digest=...]` uses: min avg/4, max 4·avg.
    #[must_use]
    pub fn with_avg(avg: u64, digest: DigestAlgorithm) -> Self {
        Self {
            flags: Self::flags_for(digest),
            min: avg / 4,
            avg,
            max: avg.saturating_mul(4),
        }
    }

    /// The flags `casync make` writes for `digest`.
    #[must_use]
    pub fn flags_for(digest: DigestAlgorithm) -> u64 {
        match digest {
            DigestAlgorithm::Sha512_256 => CASYNC_DEFAULT_FLAGS,
            _ => CASYNC_SHA256_FLAGS,
        }
    }

    /// The digest the flags select.
    #[must_use]
    pub fn digest_algorithm(&self) -> DigestAlgorithm {
        if self.flags & CA_FORMAT_SHA512_256 != 0 {
            DigestAlgorithm::Sha512_256
        } else {
            DigestAlgorithm::Sha256
        }
    }

    /// Checks `1 <= min <= avg <= max <= 128 MiB`.
    ///
    /// # Errors
    /// [`IndexError::ChunkSizeLimits`] naming `file`.
    pub fn validate(&self, file: &Origin) -> Result<()> {
        let ordered = 1 <= self.min && self.min <= self.avg && self.avg <= self.max;
        if ordered && self.max <= CASYNC_CHUNK_SIZE_LIMIT {
            Ok(())
        } else {
            Err(IndexError::ChunkSizeLimits {
                file: file.clone(),
                min: self.min,
                avg: self.avg,
                max: self.max,
                limit: CASYNC_CHUNK_SIZE_LIMIT,
            })
        }
    }
}

impl Default for CasyncParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A validated casync index held in memory (one buffer; no allocation per entry).
#[derive(Debug, Clone)]
pub struct CasyncIndex {
    data: Vec<u8>,
    file: Origin,
    format: IndexFormat,
    params: CasyncParams,
    table: EndTable,
}

/// Whether `data` starts like a casync index (header size and type fields).
pub(crate) fn looks_like_casync(data: &[u8]) -> bool {
    u64_at(data, 8) == Some(CA_FORMAT_INDEX)
}

impl CasyncIndex {
    /// Reads and validates the casync index at `path`; a `.caidx` extension marks a directory
    /// archive index, anything else is told apart by its feature flags.
    ///
    /// # Errors
    /// Any [`IndexError`] for an unreadable or invalid file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let (data, file) = read_index_file(path.as_ref())?;
        Self::from_bytes(data, file)
    }

    /// Validates a casync index held in memory.
    ///
    /// # Errors
    /// A header, table marker or tail that does not hold the format's values, chunk size limits
    /// out of order, a length that is not a whole number of entries, end offsets that do not
    /// strictly increase, or a chunk larger than the maximum.
    pub fn from_bytes(data: Vec<u8>, file: Origin) -> Result<Self> {
        if data.len() < 16 {
            return Err(IndexError::truncated(&file, "header", data.len(), 16));
        }
        if !looks_like_casync(&data) {
            return Err(IndexError::BadMagic {
                file,
                found: Hex(magic_of(&data)),
            });
        }
        let field = |position: usize| u64_at(&data, position).unwrap_or_default();
        let expect = |name: &'static str, position: usize, expected: u64| {
            let found = field(position);
            if found == expected {
                Ok(())
            } else {
                Err(IndexError::CasyncField {
                    file: file.clone(),
                    field: name,
                    position: position as u64,
                    found,
                    expected,
                })
            }
        };
        expect("header size", 0, CASYNC_HEADER_SIZE)?;
        if data.len() < EMPTY_LEN {
            return Err(IndexError::truncated(
                &file,
                "header, table header and tail",
                data.len(),
                EMPTY_LEN as u64,
            ));
        }
        let params = CasyncParams {
            flags: field(FLAGS_AT),
            min: field(MIN_AT),
            avg: field(AVG_AT),
            max: field(MAX_AT),
        };
        params.validate(&file)?;
        expect("table size", TABLE_SIZE_AT, u64::MAX)?;
        expect("table marker", TABLE_TYPE_AT, CA_FORMAT_TABLE)?;
        let entries_len = data.len() - EMPTY_LEN;
        if !entries_len.is_multiple_of(ENTRY_SIZE) {
            return Err(IndexError::Length {
                file,
                len: data.len() as u64,
                reason: format!(
                    "a casync index is {EMPTY_LEN} bytes plus whole {ENTRY_SIZE}-byte entries"
                ),
            });
        }
        let tail = data.len() - TAIL_SIZE;
        expect("tail offset", tail, 0)?;
        expect("tail size", tail + 8, 0)?;
        expect("tail index offset", tail + 16, CASYNC_HEADER_SIZE)?;
        expect(
            "tail table size",
            tail + 24,
            (data.len() - TABLE_SIZE_AT) as u64,
        )?;
        expect("tail marker", tail + 32, CA_FORMAT_TABLE_TAIL_MARKER)?;
        let table = EndTable::validate(
            &data,
            ENTRIES_AT,
            entries_len / ENTRY_SIZE,
            Some(params.max),
            &file,
        )?;
        let format = match file.path().and_then(Path::extension) {
            Some(ext) if ext == "caidx" => IndexFormat::Caidx,
            Some(ext) if ext == "caibx" => IndexFormat::Caibx,
            // A directory archive carries archive feature bits in the low half of the flags.
            _ if params.flags & 0x0000_ffff_ffff_ffff != 0 => IndexFormat::Caidx,
            _ => IndexFormat::Caibx,
        };
        Ok(Self {
            data,
            file,
            format,
            params,
            table,
        })
    }

    /// The chunk size limits and flags from the header.
    #[must_use]
    pub fn params(&self) -> &CasyncParams {
        &self.params
    }

    /// Where the index came from.
    #[must_use]
    pub fn origin(&self) -> &Origin {
        &self.file
    }
}

impl ChunkIndex for CasyncIndex {
    fn format(&self) -> IndexFormat {
        self.format
    }

    fn digest_algorithm(&self) -> DigestAlgorithm {
        self.params.digest_algorithm()
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

/// Writes a casync index as chunks arrive; [`finish`](CasyncIndexWriter::finish) writes the
/// tail. Needs no seeking.
#[derive(Debug)]
pub struct CasyncIndexWriter<W> {
    out: W,
    file: Origin,
    params: CasyncParams,
    last_end: u64,
    pushed: u64,
}

impl CasyncIndexWriter<AtomicFile> {
    /// Writes a casync index to `path`, atomically: call
    /// [`finish`](CasyncIndexWriter::finish) and then [`AtomicFile::commit`].
    ///
    /// # Errors
    /// Invalid chunk size limits, or a file that cannot be created.
    pub fn create(path: impl AsRef<Path>, params: CasyncParams) -> Result<Self> {
        let path = path.as_ref();
        params.validate(&Origin::file(path))?;
        let mut writer = Self::new(AtomicFile::create(path)?, params)?;
        writer.file = Origin::file(path);
        Ok(writer)
    }
}

impl<W: Write> CasyncIndexWriter<W> {
    /// Starts a casync index in `out`.
    ///
    /// # Errors
    /// Invalid chunk size limits, or a failed write.
    pub fn new(mut out: W, params: CasyncParams) -> Result<Self> {
        let file = Origin::memory();
        params.validate(&file)?;
        let mut head = Vec::with_capacity(ENTRIES_AT);
        for value in [
            CASYNC_HEADER_SIZE,
            CA_FORMAT_INDEX,
            params.flags,
            params.min,
            params.avg,
            params.max,
            u64::MAX,
            CA_FORMAT_TABLE,
        ] {
            head.extend_from_slice(&value.to_le_bytes());
        }
        out.write_all(&head).map_err(|source| IndexError::Write {
            file: file.clone(),
            source,
        })?;
        Ok(Self {
            out,
            file,
            params,
            last_end: 0,
            pushed: 0,
        })
    }

    /// Appends the next chunk, which ends at image offset `end` (exclusive).
    ///
    /// # Errors
    /// [`IndexError::EndsNotIncreasing`] if `end` is not past the previous end,
    /// [`IndexError::ChunkTooLarge`] if the chunk is over the maximum, or a failed write.
    pub fn push(&mut self, end: u64, digest: &Digest) -> Result<()> {
        let entry = next_entry(
            &self.file,
            ENTRIES_AT as u64,
            self.pushed,
            self.last_end,
            end,
            digest,
        )?;
        if end - self.last_end > self.params.max {
            return Err(IndexError::ChunkTooLarge {
                file: self.file.clone(),
                entry: self.pushed,
                size: end - self.last_end,
                max: self.params.max,
            });
        }
        self.out
            .write_all(&entry)
            .map_err(|source| IndexError::Write {
                file: self.file.clone(),
                source,
            })?;
        self.last_end = end;
        self.pushed += 1;
        Ok(())
    }

    /// Writes the tail and returns the output.
    ///
    /// # Errors
    /// A failed write.
    pub fn finish(mut self) -> Result<W> {
        let total = EMPTY_LEN as u64 + self.pushed * ENTRY_SIZE as u64;
        let mut tail = Vec::with_capacity(TAIL_SIZE);
        for value in [
            0,
            0,
            CASYNC_HEADER_SIZE,
            total - TABLE_SIZE_AT as u64,
            CA_FORMAT_TABLE_TAIL_MARKER,
        ] {
            tail.extend_from_slice(&u64::to_le_bytes(value));
        }
        let written = self.out.write_all(&tail).and_then(|()| self.out.flush());
        written.map_err(|source| IndexError::Write {
            file: self.file,
            source,
        })?;
        Ok(self.out)
    }
}
