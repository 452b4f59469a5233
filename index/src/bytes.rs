//! Bounds-checked little-endian reads from an index held in memory.

use std::io::{self, Read as _};
use std::path::Path;

use crate::casync::looks_like_casync;
use crate::error::{Hex, IndexError, Origin, Result};
use crate::fixed::{CHUNK_SIZE_AT as FIXED_CHUNK_SIZE_AT, SIZE_AT as FIXED_SIZE_AT};
use crate::index::Digest;
use crate::pbs::{DYNAMIC_INDEX_MAGIC, FIXED_INDEX_MAGIC, PBS_HEADER_SIZE};

/// The little-endian `u64` at `position`, or `None` if it does not fit.
pub(crate) fn u64_at(data: &[u8], position: usize) -> Option<u64> {
    let bytes = data.get(position..position.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The 32 bytes at `position`, or `None` if they do not fit.
pub(crate) fn digest_at(data: &[u8], position: usize) -> Option<Digest> {
    data.get(position..position.checked_add(32)?)?
        .try_into()
        .ok()
}

/// The `N` bytes at `position`, or `None` if they do not fit.
pub(crate) fn array_at<const N: usize>(data: &[u8], position: usize) -> Option<[u8; N]> {
    data.get(position..position.checked_add(N)?)?
        .try_into()
        .ok()
}

/// The first 8 bytes, zero-padded if the data is shorter (for "unknown magic" messages).
pub(crate) fn magic_of(data: &[u8]) -> [u8; 8] {
    let mut magic = [0u8; 8];
    let n = data.len().min(8);
    magic[..n].copy_from_slice(&data[..n]);
    magic
}

/// Reads the index file at `path` (through [`IndexBytes`], so that a file that is no index is
/// refused from its first bytes and no more than its header allows is read), with the origin
/// its errors will name.
pub(crate) fn read_index_file(path: &Path) -> Result<(Vec<u8>, Origin)> {
    let origin = Origin::file(path);
    let read_error = |source| IndexError::Read {
        file: origin.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if meta.is_dir() {
        return Err(read_error(io::ErrorKind::IsADirectory.into()));
    }
    let mut bytes = IndexBytes::new(origin.clone());
    if meta.is_file() {
        bytes.expect_len(meta.len())?;
    }
    let mut piece = vec![0u8; READ_PIECE];
    loop {
        let read = match file.read(&mut piece) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        bytes.push(&piece[..read])?;
    }
    Ok((bytes.data, origin))
}

/// How much of a file is read at once.
const READ_PIECE: usize = 64 << 10;

/// The bytes that tell an index's format and, for a fixed index, its exact length: the PBS
/// header (a casync header is shorter).
const INDEX_HEAD: usize = PBS_HEADER_SIZE;

/// The largest index cairn reads: 1 GiB. Its table holds 33 million digests: a fixed index of
/// 128 TiB in PBS's 4 MiB chunks, a dynamic index of some 100 TiB at PBS's 4 MiB average, a
/// casync index of 1.6 TiB at casync's 64 KiB average. An index is held in memory whole, so the
/// limit is also the most memory an index (or anything given where one belongs) can take.
pub const MAX_INDEX_SIZE: u64 = 1 << 30;

/// An index arriving in pieces (a file, a pipe, a download), checked as it comes: its first 16
/// bytes must be an index magic, a fixed index may be no longer than its header says, and no
/// index longer than [`MAX_INDEX_SIZE`]; the first piece that breaks a rule is refused, so
/// nothing that is no index is ever read whole. [`finish`](IndexBytes::finish) validates the
/// whole.
///
/// ```
/// use cairn_index::{IndexBytes, IndexError, Origin};
///
/// let mut bytes = IndexBytes::new(Origin::memory());
/// // A disk image given where its index belongs: refused at its first bytes.
/// let error = bytes.push(&[0xeb, 0x63, 0x90, 0x10, 0x8e, 0xd0, 0xbc, 0, 0xb0, 0xb8, 0, 0, 0x8e, 0xd8, 0x8e, 0xc0]);
/// assert!(matches!(error, Err(IndexError::BadMagic { .. })));
/// ```
#[derive(Debug)]
pub struct IndexBytes {
    data: Vec<u8>,
    origin: Origin,
    /// The most bytes the index may have, once its first bytes tell.
    limit: Option<u64>,
    /// The length announced for it (a file's length, a `Content-Length`).
    declared: Option<u64>,
}

impl IndexBytes {
    /// Nothing yet, of the index its errors will call `origin`.
    #[must_use]
    pub fn new(origin: Origin) -> Self {
        Self {
            data: Vec::new(),
            origin,
            limit: None,
            declared: None,
        }
    }

    /// The bytes so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether nothing has come yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The whole index will be `len` bytes (a file's length, a `Content-Length`). Once the
    /// first bytes have shown an index (at once, if they have), a length over what it may have
    /// is refused and room is made for the rest; before, nothing is judged by the length, so
    /// something that is no index is told so, not that it is large.
    ///
    /// # Errors
    /// [`IndexError::TooLarge`].
    pub fn expect_len(&mut self, len: u64) -> Result<()> {
        self.declared = Some(len);
        self.take_declared()
    }

    /// Checks the announced length against the limit and makes room for it, once both are
    /// known.
    fn take_declared(&mut self) -> Result<()> {
        if let (Some(_), Some(declared)) = (self.limit, self.declared) {
            self.check(declared)?;
            let more = usize::try_from(declared)
                .unwrap_or(usize::MAX)
                .saturating_sub(self.data.len());
            self.data.reserve_exact(more);
        }
        Ok(())
    }

    /// The next piece.
    ///
    /// # Errors
    /// [`IndexError::BadMagic`] as soon as the first 16 bytes are no index's;
    /// [`IndexError::ChunkSize`] for a fixed index whose header cannot hold;
    /// [`IndexError::TooLarge`] once the bytes pass what the index may have.
    pub fn push(&mut self, piece: &[u8]) -> Result<()> {
        let len = (self.data.len() + piece.len()) as u64;
        if self.limit.is_none() {
            let mut head = self.data.clone();
            head.extend_from_slice(&piece[..piece.len().min(INDEX_HEAD)]);
            self.limit = size_limit(&head, &self.origin)?;
            self.take_declared()?;
        }
        self.check(len)?;
        self.data.extend_from_slice(piece);
        Ok(())
    }

    /// The index, validated.
    ///
    /// # Errors
    /// As [`Index::from_bytes`](crate::Index::from_bytes).
    pub fn finish(self, options: &crate::OpenOptions) -> Result<crate::Index> {
        crate::Index::from_bytes(self.data, self.origin, options)
    }

    fn check(&self, len: u64) -> Result<()> {
        let limit = self.limit.unwrap_or(MAX_INDEX_SIZE);
        if len > limit {
            return Err(IndexError::TooLarge {
                file: self.origin.clone(),
                size: len,
                limit,
                reason: if limit == MAX_INDEX_SIZE {
                    "the largest index cairn reads"
                } else {
                    "what its header allows"
                },
            });
        }
        Ok(())
    }
}

/// The most bytes an index starting with `head` may have, once `head` tells (16 bytes for the
/// magic, 80 for a fixed index's sizes); `None` while it is too short to tell.
fn size_limit(head: &[u8], origin: &Origin) -> Result<Option<u64>> {
    if head.len() < 16 {
        return Ok(None);
    }
    let magic = magic_of(head);
    if magic == DYNAMIC_INDEX_MAGIC || looks_like_casync(head) {
        return Ok(Some(MAX_INDEX_SIZE));
    }
    if magic != FIXED_INDEX_MAGIC {
        return Err(IndexError::BadMagic {
            file: origin.clone(),
            found: Hex(magic),
        });
    }
    let (Some(size), Some(chunk_size)) = (
        u64_at(head, FIXED_SIZE_AT),
        u64_at(head, FIXED_CHUNK_SIZE_AT),
    ) else {
        return Ok(None);
    };
    if !chunk_size.is_power_of_two() {
        return Err(IndexError::ChunkSize {
            file: origin.clone(),
            chunk_size,
        });
    }
    let exact = size
        .div_ceil(chunk_size)
        .checked_mul(32)
        .and_then(|table| table.checked_add(PBS_HEADER_SIZE as u64))
        .unwrap_or(u64::MAX);
    if exact > MAX_INDEX_SIZE {
        return Err(IndexError::TooLarge {
            file: origin.clone(),
            size: exact,
            limit: MAX_INDEX_SIZE,
            reason: "the largest index cairn reads, by its header's sizes",
        });
    }
    Ok(Some(exact))
}
