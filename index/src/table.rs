//! The table both PBS dynamic indexes and casync indexes use: 40-byte entries, each the
//! exclusive end offset of a chunk (u64 LE) followed by its 32-byte digest.

use crate::bytes::{digest_at, u64_at};
use crate::error::{IndexError, Origin, Result};
use crate::index::{ChunkInfo, Digest};

/// Bytes per entry.
pub(crate) const ENTRY_SIZE: usize = 40;

/// A validated table of end offsets and digests inside an index held in memory.
#[derive(Debug, Clone)]
pub(crate) struct EndTable {
    /// Byte position of entry 0 in the index data.
    start: usize,
    count: usize,
}

impl EndTable {
    /// Checks `count` entries at `start`: ends strictly increasing from 0 (no empty chunk) and,
    /// with `max_chunk`, no chunk larger than it.
    pub(crate) fn validate(
        data: &[u8],
        start: usize,
        count: usize,
        max_chunk: Option<u64>,
        file: &Origin,
    ) -> Result<Self> {
        let table = Self { start, count };
        let mut previous = 0u64;
        for entry in 0..count {
            let position = start + entry * ENTRY_SIZE;
            let Some(end) = u64_at(data, position) else {
                return Err(IndexError::truncated(
                    file,
                    "entry table",
                    data.len(),
                    (start + count * ENTRY_SIZE) as u64,
                ));
            };
            if end <= previous {
                return Err(IndexError::EndsNotIncreasing {
                    file: file.clone(),
                    entry: entry as u64,
                    position: position as u64,
                    previous,
                    end,
                });
            }
            if let Some(max) = max_chunk
                && end - previous > max
            {
                return Err(IndexError::ChunkTooLarge {
                    file: file.clone(),
                    entry: entry as u64,
                    size: end - previous,
                    max,
                });
            }
            previous = end;
        }
        Ok(table)
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    fn end(&self, data: &[u8], index: usize) -> Option<u64> {
        if index >= self.count {
            return None;
        }
        u64_at(data, self.start + index * ENTRY_SIZE)
    }

    fn digest(&self, data: &[u8], index: usize) -> Option<Digest> {
        if index >= self.count {
            return None;
        }
        digest_at(data, self.start + index * ENTRY_SIZE + 8)
    }

    /// The image size: the last end, or 0 with no entries.
    pub(crate) fn image_size(&self, data: &[u8]) -> u64 {
        self.count
            .checked_sub(1)
            .and_then(|last| self.end(data, last))
            .unwrap_or(0)
    }

    pub(crate) fn chunk(&self, data: &[u8], index: usize) -> Option<ChunkInfo> {
        let end = self.end(data, index)?;
        let start = match index.checked_sub(1) {
            Some(previous) => self.end(data, previous)?,
            None => 0,
        };
        Some(ChunkInfo {
            index,
            start,
            end,
            digest: self.digest(data, index)?,
        })
    }

    /// Binary search for the first chunk whose end is past `offset`.
    pub(crate) fn locate(&self, data: &[u8], offset: u64) -> Option<(usize, u64)> {
        let (mut low, mut high) = (0usize, self.count);
        while low < high {
            let mid = low + (high - low) / 2;
            if self.end(data, mid)? <= offset {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        let chunk = self.chunk(data, low)?;
        Some((low, offset - chunk.start))
    }

    /// The raw entry bytes, for checksums.
    pub(crate) fn bytes<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        data.get(self.start..self.start + self.count * ENTRY_SIZE)
            .unwrap_or_default()
    }
}

/// The next entry of a writer: checks that `end` is past `last_end` and encodes the entry.
/// `first_entry_at` is where entry 0 sits in the file (for the error's position).
pub(crate) fn next_entry(
    file: &Origin,
    first_entry_at: u64,
    pushed: u64,
    last_end: u64,
    end: u64,
    digest: &Digest,
) -> Result<[u8; ENTRY_SIZE]> {
    if end <= last_end {
        return Err(IndexError::EndsNotIncreasing {
            file: file.clone(),
            entry: pushed,
            position: first_entry_at + pushed * ENTRY_SIZE as u64,
            previous: last_end,
            end,
        });
    }
    let mut entry = [0u8; ENTRY_SIZE];
    entry[..8].copy_from_slice(&end.to_le_bytes());
    entry[8..].copy_from_slice(digest);
    Ok(entry)
}
