//! `tokio::io::AsyncRead + AsyncSeek` over a [`ChunkReader`].

use std::future::Future;
use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};

use crate::error::ReaderError;
use crate::reader::ChunkReader;

/// The most one poll asks of the reader.
const MAX_READ: usize = 4 << 20;

type ReadFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, ReaderError>> + Send>>;

/// A read in flight: where it reads, and the future that reads it into its own buffer.
struct InFlight {
    offset: u64,
    future: ReadFuture,
}

/// A [`ChunkReader`] as a tokio `AsyncRead + AsyncSeek` stream with a position.
///
/// A read fills at most the buffer's *remaining* space. The read in flight owns its buffer, so a
/// caller may poll again with a different (even smaller) buffer: what fits is copied, and the
/// position advances by exactly that. A seek drops the read in flight.
pub struct AsyncChunkReader {
    reader: ChunkReader,
    position: u64,
    in_flight: Option<InFlight>,
}

impl std::fmt::Debug for AsyncChunkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncChunkReader")
            .field("position", &self.position)
            .field("read_in_flight", &self.in_flight.as_ref().map(|r| r.offset))
            .finish_non_exhaustive()
    }
}

impl AsyncChunkReader {
    /// A stream at position 0, with readahead of its own (see
    /// [`ChunkReader::new_stream`]): two streams over one reader do not disturb each other's
    /// sequential detection.
    #[must_use]
    pub fn new(reader: ChunkReader) -> Self {
        Self {
            reader: reader.into_new_stream(),
            position: 0,
            in_flight: None,
        }
    }

    /// The position.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The reader underneath.
    #[must_use]
    pub fn reader(&self) -> &ChunkReader {
        &self.reader
    }
}

impl AsyncRead for AsyncChunkReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let position = this.position;
        let stale = this.in_flight.as_ref().is_none_or(|r| r.offset != position);
        if stale {
            let reader = this.reader.clone();
            let len = buf.remaining().min(MAX_READ);
            this.in_flight = Some(InFlight {
                offset: position,
                future: Box::pin(async move {
                    let mut data = vec![0u8; len];
                    let read = reader.read_at(&mut data, position).await?;
                    data.truncate(read);
                    Ok(data)
                }),
            });
        }
        let Some(in_flight) = this.in_flight.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match in_flight.future.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                this.in_flight = None;
                let data = result.map_err(io::Error::from)?;
                let n = data.len().min(buf.remaining());
                buf.put_slice(&data[..n]);
                this.position += n as u64;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncSeek for AsyncChunkReader {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        let target = seek_target(this.position, this.reader.image_size(), position)?;
        this.in_flight = None;
        this.position = target;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.position))
    }
}

/// The absolute position a seek asks for; a position before 0 is an error (past the end is
/// allowed, and reads there return nothing).
pub(crate) fn seek_target(current: u64, size: u64, seek: SeekFrom) -> io::Result<u64> {
    let (base, delta) = match seek {
        SeekFrom::Start(offset) => return Ok(offset),
        SeekFrom::End(delta) => (size, delta),
        SeekFrom::Current(delta) => (current, delta),
    };
    base.checked_add_signed(delta).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("seek to {base} {delta:+} is before the start or past 2^64"),
        )
    })
}
