//! `std::io::Read + Seek` over a [`ChunkReader`], for synchronous users.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

use crate::async_io::seek_target;
use crate::error::ReaderError;
use crate::reader::ChunkReader;

/// A [`ChunkReader`] as a blocking `Read + Seek` stream with a position, plus positional
/// [`read_at`](BlockingChunkReader::read_at).
///
/// It runs the async reader on a runtime of its own (two worker threads) or on one handed to it.
/// Call it from ordinary threads: called from inside an async runtime it returns
/// [`ReaderError::InsideRuntime`] rather than block a worker.
#[derive(Debug)]
pub struct BlockingChunkReader {
    reader: ChunkReader,
    position: u64,
    runtime: RuntimeRef,
}

#[derive(Debug)]
enum RuntimeRef {
    Owned(Arc<Runtime>),
    Handle(Handle),
}

impl BlockingChunkReader {
    /// A blocking reader with a runtime of its own, and readahead of its own (see
    /// [`ChunkReader::new_stream`]).
    ///
    /// # Errors
    /// [`ReaderError::Runtime`] if the runtime cannot start.
    pub fn new(reader: ChunkReader) -> Result<Self, ReaderError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-reader")
            .enable_all()
            .build()
            .map_err(|e| ReaderError::Runtime(Arc::new(e)))?;
        Ok(Self {
            reader: reader.into_new_stream(),
            position: 0,
            runtime: RuntimeRef::Owned(Arc::new(runtime)),
        })
    }

    /// A blocking reader that runs on `handle`'s runtime, which must be a multi-thread one: the
    /// reader's fetches run as tasks of that runtime, and a current-thread runtime runs its tasks
    /// only inside its own `block_on`, so a read from another thread would wait forever.
    ///
    /// # Errors
    /// [`ReaderError::RuntimeFlavor`] for a runtime that is not multi-thread.
    pub fn with_handle(reader: ChunkReader, handle: Handle) -> Result<Self, ReaderError> {
        match handle.runtime_flavor() {
            RuntimeFlavor::MultiThread => Ok(Self {
                reader: reader.into_new_stream(),
                position: 0,
                runtime: RuntimeRef::Handle(handle),
            }),
            RuntimeFlavor::CurrentThread => Err(ReaderError::RuntimeFlavor {
                flavor: "current_thread",
            }),
            _ => Err(ReaderError::RuntimeFlavor {
                flavor: "unknown (not multi_thread)",
            }),
        }
    }

    /// Reads at `offset` without moving the position; see [`ChunkReader::read_at`].
    ///
    /// # Errors
    /// As [`ChunkReader::read_at`], and [`ReaderError::InsideRuntime`].
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, ReaderError> {
        if Handle::try_current().is_ok() {
            return Err(ReaderError::InsideRuntime);
        }
        let read = self.reader.read_at(buf, offset);
        match &self.runtime {
            RuntimeRef::Owned(runtime) => runtime.block_on(read),
            RuntimeRef::Handle(handle) => handle.block_on(read),
        }
    }

    /// The position.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }
}

impl Read for BlockingChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.read_at(buf, self.position)?;
        self.position += read as u64;
        Ok(read)
    }
}

impl Seek for BlockingChunkReader {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        self.position = seek_target(self.position, self.reader.image_size(), position)?;
        Ok(self.position)
    }
}
