//! A reader served over NBD (feature `nbd`): [`NbdExport`] implements `cairn-nbd`'s export
//! trait, so `cairn_nbd::Server` serves backup images to qemu, libnbd's tools and the kernel.
//!
//! The protocol crate knows nothing of chunks; this is where the two meet. Each connection
//! reads through its own stream (its sequential reads get readahead of their own), every
//! connection shares the reader's cache, zero chunks are reported as `HOLE|ZERO` extents and
//! sent as holes without a fetch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use cairn_nbd::{Export, ExportError, Extent, Segment, Session};

use crate::reader::{ChunkReader, ImageSlice, SlicedRead};

/// A slice using less than this fraction (1/N) of its chunk is copied out, so a small read
/// does not keep a whole chunk alive while its reply waits to be sent.
const SHARE_FRACTION: usize = 2;

/// The most extents one block status answer walks (the protocol's own limit is 2^20).
const MAX_EXTENTS: usize = 1 << 16;

/// The image of a [`ChunkReader`] as an NBD export.
#[derive(Debug, Clone)]
pub struct NbdExport {
    reader: ChunkReader,
}

impl NbdExport {
    /// Serves `reader`'s image; connections share its cache and counters.
    #[must_use]
    pub fn new(reader: ChunkReader) -> Self {
        Self { reader }
    }

    /// The reader.
    #[must_use]
    pub fn reader(&self) -> &ChunkReader {
        &self.reader
    }
}

impl Export for NbdExport {
    fn size(&self) -> u64 {
        self.reader.image_size()
    }

    fn description(&self) -> String {
        let index = self.reader.index();
        format!(
            "{} image of {} chunks, served by cairn",
            index.format(),
            index.chunk_count()
        )
    }

    fn open(&self) -> Arc<dyn Session> {
        Arc::new(NbdSession {
            reader: self.reader.new_stream(),
            counters: SessionCounters::default(),
        })
    }
}

#[derive(Debug, Default)]
struct SessionCounters {
    cache_hits: AtomicU64,
    readahead_hits: AtomicU64,
    chunks_fetched: AtomicU64,
    zero_chunks: AtomicU64,
}

/// One connection's stream over the reader.
#[derive(Debug)]
struct NbdSession {
    reader: ChunkReader,
    counters: SessionCounters,
}

impl NbdSession {
    async fn slices(
        &self,
        action: &'static str,
        offset: u64,
        length: u32,
    ) -> Result<SlicedRead, ExportError> {
        let read = self
            .reader
            .read_slices(offset, u64::from(length))
            .await
            .map_err(|e| ExportError::new(action, offset, u64::from(length), e))?;
        let c = &self.counters;
        c.cache_hits.fetch_add(read.cache_hits, Ordering::Relaxed);
        c.readahead_hits
            .fetch_add(read.readahead_hits, Ordering::Relaxed);
        c.chunks_fetched
            .fetch_add(read.chunks_fetched, Ordering::Relaxed);
        c.zero_chunks.fetch_add(read.zero_chunks, Ordering::Relaxed);
        Ok(read)
    }
}

#[async_trait]
impl Session for NbdSession {
    async fn read(&self, offset: u64, length: u32) -> Result<Vec<Segment>, ExportError> {
        let read = self.slices("read", offset, length).await?;
        Ok(read
            .slices
            .into_iter()
            .map(|slice| match slice {
                ImageSlice::Data { chunk, range } => {
                    if range.len() * SHARE_FRACTION < chunk.len() {
                        let copy = chunk[range].to_vec();
                        let len = copy.len();
                        Segment::data(Arc::new(copy), 0..len)
                    } else {
                        Segment::data(chunk, range)
                    }
                }
                ImageSlice::Zeros(len) => Segment::Zeros(len),
            })
            .collect())
    }

    async fn extents(&self, offset: u64, length: u32) -> Result<Vec<Extent>, ExportError> {
        let index = self.reader.index();
        let end = offset
            .saturating_add(u64::from(length))
            .min(self.reader.image_size());
        let Some((first, _)) = index.locate(offset) else {
            return Ok(Vec::new());
        };
        let mut extents: Vec<Extent> = Vec::new();
        for i in first..index.chunk_count() {
            let Some(chunk) = index.chunk(i) else {
                break;
            };
            if chunk.start >= end || extents.len() >= MAX_EXTENTS {
                break;
            }
            let len = chunk.end.min(end) - chunk.start.max(offset);
            let zero = self.reader.is_zero_chunk(&chunk);
            match extents.last_mut() {
                Some(last) if last.zero == zero => last.length += len,
                _ => extents.push(if zero {
                    Extent::zero(len)
                } else {
                    Extent::data(len)
                }),
            }
        }
        Ok(extents)
    }

    async fn prefetch(&self, offset: u64, length: u32) -> Result<(), ExportError> {
        self.slices("prefetch", offset, length).await.map(drop)
    }

    fn summary(&self) -> String {
        let c = &self.counters;
        format!(
            "chunks: {} from the cache, {} fetched ahead, {} fetched, {} zero",
            c.cache_hits.load(Ordering::Relaxed),
            c.readahead_hits.load(Ordering::Relaxed),
            c.chunks_fetched.load(Ordering::Relaxed),
            c.zero_chunks.load(Ordering::Relaxed)
        )
    }
}
