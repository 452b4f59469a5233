//! The async and blocking stream adapters against a model: `std::io::Cursor` over the image.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use cairn_chunk_store::fault::{Fault, Target};
use cairn_reader::{
    AsyncChunkReader, BlockingChunkReader, ChunkReader, ReaderError, ReaderOptions,
};
use common::{fixed, image, noise};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, ReadBuf};

#[derive(Debug, Clone)]
enum Op {
    Read(usize),
    SeekStart(u64),
    SeekCurrent(i64),
    SeekEnd(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..30_000).prop_map(Op::Read),
        1 => (0u64..80_000).prop_map(Op::SeekStart),
        1 => (-40_000i64..40_000).prop_map(Op::SeekCurrent),
        1 => (-80_000i64..1000).prop_map(Op::SeekEnd),
    ]
}

fn seek_of(op: &Op) -> Option<SeekFrom> {
    match *op {
        Op::SeekStart(n) => Some(SeekFrom::Start(n)),
        Op::SeekCurrent(n) => Some(SeekFrom::Current(n)),
        Op::SeekEnd(n) => Some(SeekFrom::End(n)),
        Op::Read(_) => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn async_adapter_matches_a_cursor(seed: u64, len in 0usize..70_000, ops in proptest::collection::vec(op(), 1..25)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let fixture = fixed(image(seed, len), 4096).await;
            let reader = ChunkReader::new(fixture.index.clone(), fixture.store(), ReaderOptions::default());
            let mut stream = AsyncChunkReader::new(reader);
            let mut model = Cursor::new(fixture.image.clone());
            for op in &ops {
                if let Some(seek) = seek_of(op) {
                    let ours = stream.seek(seek).await.ok();
                    let theirs = Seek::seek(&mut model, seek).ok();
                    prop_assert_eq!(ours, theirs, "{:?}", op);
                } else if let Op::Read(n) = op {
                    let mut ours = vec![0; *n];
                    let mut theirs = vec![0; *n];
                    let a = stream.read(&mut ours).await.unwrap();
                    let b = Read::read(&mut model, &mut theirs).unwrap();
                    // A read may return less than the model's; what it returns must match.
                    prop_assert!(a <= b);
                    prop_assert!(a > 0 || b == 0);
                    prop_assert_eq!(&ours[..a], &theirs[..a]);
                    Seek::seek(&mut model, SeekFrom::Current(a as i64 - b as i64)).unwrap();
                }
                prop_assert_eq!(stream.position(), model.position());
            }
            Ok(())
        })?;
    }

    #[test]
    fn blocking_adapter_matches_a_cursor(seed: u64, len in 0usize..70_000, ops in proptest::collection::vec(op(), 1..25)) {
        let data = image(seed, len);
        let setup = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let fixture = setup.block_on(fixed(data, 8192));
        let reader = ChunkReader::new(fixture.index.clone(), fixture.store(), ReaderOptions::default());
        let mut stream = BlockingChunkReader::new(reader).unwrap();
        let mut model = Cursor::new(fixture.image.clone());
        for op in &ops {
            if let Some(seek) = seek_of(op) {
                prop_assert_eq!(Seek::seek(&mut stream, seek).ok(), Seek::seek(&mut model, seek).ok());
            } else if let Op::Read(n) = op {
                let mut ours = vec![0; *n];
                let mut theirs = vec![0; *n];
                let a = Read::read(&mut stream, &mut ours).unwrap();
                let b = Read::read(&mut model, &mut theirs).unwrap();
                prop_assert_eq!(a, b);
                prop_assert_eq!(&ours, &theirs);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_again_with_a_smaller_buffer_is_safe_and_a_seek_drops_the_read() {
    let fixture = fixed(image(9, 40_000), 4096).await;
    fixture
        .faults
        .add(Target::All, Fault::Delay(Duration::from_millis(30)));
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default().readahead_chunks(0),
    );
    let mut stream = AsyncChunkReader::new(reader);
    // First poll with a large buffer: the read starts and is pending.
    let mut large = vec![0u8; 20_000];
    let first = std::future::poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut large);
        Poll::Ready(
            Pin::new(&mut stream)
                .poll_read(cx, &mut buf)
                .map(|r| r.map(|()| buf.filled().len())),
        )
    })
    .await;
    assert!(first.is_pending());
    // Polled again with a 100-byte buffer: exactly 100 bytes arrive, no panic.
    let mut small = vec![0u8; 100];
    let n = stream.read(&mut small).await.unwrap();
    assert_eq!(n, 100);
    assert_eq!(small, fixture.image[..100]);
    assert_eq!(stream.position(), 100);
    // A seek while a read is in flight drops it: the next read starts at the new position.
    let mut buf = vec![0u8; 5000];
    stream.seek(SeekFrom::Start(24_000)).await.unwrap(); // not cached yet
    let pending = std::future::poll_fn(|cx| {
        let mut rb = ReadBuf::new(&mut buf);
        Poll::Ready(Pin::new(&mut stream).poll_read(cx, &mut rb).is_pending())
    })
    .await;
    assert!(pending);
    stream.seek(SeekFrom::Start(30_000)).await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(n > 0);
    assert_eq!(buf[..n], fixture.image[30_000..30_000 + n]);
    // Seeking before the start is an error and leaves the position alone.
    let before_start = stream
        .seek(SeekFrom::Current(-1_000_000))
        .await
        .unwrap_err();
    assert_eq!(before_start.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(stream.position(), 30_000 + n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_adapter_refuses_to_block_a_runtime_worker() {
    let fixture = fixed(image(10, 1000), 4096).await;
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default(),
    );
    let blocking =
        BlockingChunkReader::with_handle(reader, tokio::runtime::Handle::current()).unwrap();
    let mut buf = [0u8; 10];
    assert!(matches!(
        blocking.read_at(&mut buf, 0),
        Err(ReaderError::InsideRuntime)
    ));
}

#[test]
fn the_blocking_adapter_refuses_a_current_thread_runtime_and_works_on_a_multi_thread_one() {
    let setup = tokio::runtime::Runtime::new().unwrap();
    let fixture = setup.block_on(fixed(image(11, 50_000), 4096));
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default(),
    );
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match BlockingChunkReader::with_handle(reader.clone(), current.handle().clone()) {
        Err(ReaderError::RuntimeFlavor { flavor }) => assert_eq!(flavor, "current_thread"),
        other => panic!("expected a runtime-flavour error, got {other:?}"),
    }
    // A multi-thread runtime's handle, used from a plain thread, reads.
    let mut blocking = BlockingChunkReader::with_handle(reader, setup.handle().clone()).unwrap();
    let mut buf = vec![0u8; 30_000];
    blocking.seek(SeekFrom::Start(7_000)).unwrap();
    blocking.read_exact(&mut buf).unwrap();
    assert_eq!(buf, fixture.image[7_000..37_000]);
}

/// Reads `chunks` of 4096 bytes in turn from each stream, interleaved: stream `s` reads its
/// own run of chunks from `starts[s]`.
async fn interleaved(streams: &mut [AsyncChunkReader], starts: &[u64], chunks: u64) {
    let mut buf = vec![0u8; 4096];
    for (stream, start) in streams.iter_mut().zip(starts) {
        stream.seek(SeekFrom::Start(start * 4096)).await.unwrap();
    }
    for _ in 0..chunks {
        for stream in streams.iter_mut() {
            stream.read_exact(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_over_one_reader_each_keep_their_readahead() {
    let fixture = fixed(noise(12, 64 * 4096), 4096).await;
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default().readahead_chunks(4),
    );
    let mut streams = [
        AsyncChunkReader::new(reader.clone()),
        AsyncChunkReader::new(reader.clone()),
    ];
    interleaved(&mut streams, &[0, 32], 10).await;
    let stats = reader.stats();
    // Each stream reads 10 chunks in order: from its second read on, the chunk it reads was
    // fetched ahead. Had the streams shared one detector, each read would look random.
    assert!(stats.readahead_hits >= 16, "{stats:?}");
    assert!(stats.readahead_issued >= 20, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_stream_separates_positional_readers_and_clones_share_one() {
    let fixture = fixed(noise(13, 64 * 4096), 4096).await;
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default().readahead_chunks(2),
    );
    let other = reader.new_stream();
    let mut buf = vec![0u8; 4096];
    for i in 0..8u64 {
        reader.read_exact_at(&mut buf, i * 4096).await.unwrap();
        other
            .read_exact_at(&mut buf, (40 + i) * 4096)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let separate = reader.stats();
    assert!(separate.readahead_hits >= 12, "{separate:?}");
    // A clone is the same stream: interleaving it with the original is random access.
    let same = reader.clone();
    let before = reader.stats().readahead_issued;
    for i in 0..8u64 {
        reader
            .read_exact_at(&mut buf, (20 + i) * 4096)
            .await
            .unwrap();
        same.read_exact_at(&mut buf, (50 + i) * 4096).await.unwrap();
    }
    assert_eq!(reader.stats().readahead_issued, before);
}
