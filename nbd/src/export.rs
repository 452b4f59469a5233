//! What the server serves: the [`Export`] and [`Session`] traits, and [`MemoryExport`].

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::ExportError;

/// Part of a read's answer: bytes held somewhere (shared, not copied), or zeros.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Segment {
    /// `bytes[range]`.
    Data {
        /// The buffer (a cached chunk, say).
        bytes: Arc<Vec<u8>>,
        /// The part of it that belongs to the read.
        range: Range<usize>,
    },
    /// This many zero bytes.
    Zeros(u64),
}

impl Segment {
    /// `bytes[range]` as a segment.
    #[must_use]
    pub fn data(bytes: Arc<Vec<u8>>, range: Range<usize>) -> Self {
        Self::Data { bytes, range }
    }

    /// The segment's length (0 for a data range outside its buffer, which the server refuses).
    #[must_use]
    pub fn len(&self) -> u64 {
        match self {
            Self::Data { bytes, range } => {
                if range.start <= range.end && range.end <= bytes.len() {
                    (range.end - range.start) as u64
                } else {
                    0
                }
            }
            Self::Zeros(length) => *length,
        }
    }

    /// Whether the segment is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A run of bytes with one allocation status (`base:allocation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Length in bytes (non-zero).
    pub length: u64,
    /// Known to read as zeros, and not stored: reported `HOLE|ZERO`, so copying tools skip it.
    pub zero: bool,
}

impl Extent {
    /// `length` bytes of data.
    #[must_use]
    pub fn data(length: u64) -> Self {
        Self {
            length,
            zero: false,
        }
    }

    /// `length` bytes known to be zeros.
    #[must_use]
    pub fn zero(length: u64) -> Self {
        Self { length, zero: true }
    }
}

/// Something served as an NBD export: a size, and a [`Session`] per connection.
pub trait Export: Send + Sync + std::fmt::Debug + 'static {
    /// Its size in bytes.
    fn size(&self) -> u64;

    /// A line for people (`NBD_INFO_DESCRIPTION`, `nbdinfo`); empty for none.
    fn description(&self) -> String {
        String::new()
    }

    /// A session for one connection that chose this export: its requests come through it,
    /// concurrently. Sessions let an export keep per-connection state (readahead, counters).
    fn open(&self) -> Arc<dyn Session>;
}

/// One connection's view of an export. Requests reach it already checked: in range, and
/// `length` at most [`MAX_PAYLOAD`](crate::protocol::MAX_PAYLOAD) for reads.
#[async_trait]
pub trait Session: Send + Sync + 'static {
    /// The `length` bytes at `offset`, as segments whose lengths add up to `length`.
    ///
    /// # Errors
    /// Any failure to produce the bytes: the client gets `EIO`, the server logs the error.
    async fn read(&self, offset: u64, length: u32) -> Result<Vec<Segment>, ExportError>;

    /// Extents from `offset`, covering at least one byte and ideally `length`. The default
    /// says everything is data, which is always correct.
    ///
    /// # Errors
    /// As for [`read`](Session::read).
    async fn extents(&self, _offset: u64, length: u32) -> Result<Vec<Extent>, ExportError> {
        Ok(vec![Extent::data(u64::from(length))])
    }

    /// Make later reads of `offset..offset + length` fast (`NBD_CMD_CACHE`). Default: nothing.
    ///
    /// # Errors
    /// As for [`read`](Session::read).
    async fn prefetch(&self, _offset: u64, _length: u32) -> Result<(), ExportError> {
        Ok(())
    }

    /// What this session did, in a few words for the connection's closing log line.
    fn summary(&self) -> String {
        String::new()
    }
}

/// An export of bytes in memory. All-zero 4 KiB blocks are reported as zero extents and sent
/// as holes. Handy for tests and examples.
#[derive(Debug, Clone)]
pub struct MemoryExport {
    bytes: Arc<Vec<u8>>,
}

/// The granularity of [`MemoryExport`]'s extents.
const MEMORY_BLOCK: usize = 4096;

impl MemoryExport {
    /// Serves `bytes`.
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Arc::new(bytes),
        }
    }

    fn block_is_zero(&self, block: usize) -> bool {
        let start = block * MEMORY_BLOCK;
        let end = (start + MEMORY_BLOCK).min(self.bytes.len());
        self.bytes[start..end].iter().all(|&b| b == 0)
    }
}

impl Export for MemoryExport {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn description(&self) -> String {
        format!("{} bytes in memory", self.bytes.len())
    }

    fn open(&self) -> Arc<dyn Session> {
        Arc::new(self.clone())
    }
}

#[async_trait]
impl Session for MemoryExport {
    async fn read(&self, offset: u64, length: u32) -> Result<Vec<Segment>, ExportError> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(length as usize);
        if end > self.bytes.len() {
            return Err(ExportError::new(
                "read",
                offset,
                u64::from(length),
                "beyond the end",
            ));
        }
        // Zero blocks as zero segments, the rest shared.
        let mut segments: Vec<Segment> = Vec::new();
        let mut at = start;
        while at < end {
            let block = at / MEMORY_BLOCK;
            let block_end = ((block + 1) * MEMORY_BLOCK).min(end);
            let piece = if self.block_is_zero(block) {
                Segment::Zeros((block_end - at) as u64)
            } else {
                Segment::data(Arc::clone(&self.bytes), at..block_end)
            };
            match (segments.last_mut(), piece) {
                (Some(Segment::Zeros(run)), Segment::Zeros(more)) => *run += more,
                (Some(Segment::Data { range, .. }), Segment::Data { range: next, .. })
                    if range.end == next.start =>
                {
                    range.end = next.end;
                }
                (_, piece) => segments.push(piece),
            }
            at = block_end;
        }
        Ok(segments)
    }

    async fn extents(&self, offset: u64, length: u32) -> Result<Vec<Extent>, ExportError> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(length as usize).min(self.bytes.len());
        let mut extents: Vec<Extent> = Vec::new();
        let mut at = start;
        while at < end {
            let block = at / MEMORY_BLOCK;
            let block_end = ((block + 1) * MEMORY_BLOCK).min(end);
            let zero = self.block_is_zero(block);
            let len = (block_end - at) as u64;
            match extents.last_mut() {
                Some(last) if last.zero == zero => last.length += len,
                _ => extents.push(Extent { length: len, zero }),
            }
            at = block_end;
        }
        Ok(extents)
    }
}
