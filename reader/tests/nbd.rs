//! The reader as an NBD export: real TCP connections through cairn-nbd's server and its test
//! client, against the image as the model.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::sync::Arc;

use cairn_nbd::protocol::{CMD_BLOCK_STATUS, CMD_CACHE, STATE_HOLE, STATE_ZERO};
use cairn_nbd::testing::Client;
use cairn_nbd::{Export, Server, ServerOptions};
use cairn_reader::nbd::NbdExport;
use cairn_reader::{ChunkReader, ReaderOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const CHUNK: usize = 64 << 10;

/// 16 chunks: data, then chunks 4..8 zeros, then data, chunk 12 zeros.
fn image() -> Vec<u8> {
    let mut image = common::noise(7, 16 * CHUNK);
    image[4 * CHUNK..8 * CHUNK].fill(0);
    image[12 * CHUNK..13 * CHUNK].fill(0);
    image
}

async fn serve(reader: ChunkReader) -> (std::net::SocketAddr, CancellationToken) {
    let export: Arc<dyn Export> = Arc::new(NbdExport::new(reader));
    let server = Server::new([("img".to_owned(), export)], ServerOptions::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move { server.serve_tcp(listener, stop).await }
    });
    (address, stop)
}

async fn connect(address: std::net::SocketAddr) -> Client<TcpStream> {
    Client::connect(TcpStream::connect(address).await.unwrap(), "img", true)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_holes_and_block_status_follow_the_index() {
    let fixture = common::fixed(image(), CHUNK).await;
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default(),
    );
    let (address, stop) = serve(reader.clone()).await;
    let mut c = connect(address).await;
    assert_eq!(c.size, fixture.image.len() as u64);
    let whole = c.read(0, fixture.image.len() as u32).await.unwrap();
    assert!(
        whole.data == fixture.image,
        "the whole image, byte for byte"
    );
    assert_eq!(
        whole.hole_bytes,
        5 * CHUNK as u64,
        "zero chunks sent as holes"
    );
    for (offset, length) in [
        (1u64, 1u32),
        (CHUNK as u64 - 3, 7),
        (3 * CHUNK as u64, 3 * CHUNK as u32),
    ] {
        let reply = c.read(offset, length).await.unwrap();
        let (a, b) = (offset as usize, offset as usize + length as usize);
        assert!(reply.data == fixture.image[a..b], "read {offset}+{length}");
    }
    c.send(CMD_BLOCK_STATUS, 0, 0, fixture.image.len() as u32)
        .await
        .unwrap();
    let (_, status) = c.reply(0, 0).await.unwrap();
    let z = STATE_HOLE | STATE_ZERO;
    let k = CHUNK as u32;
    assert_eq!(
        status.extents,
        [(4 * k, 0), (4 * k, z), (4 * k, 0), (k, z), (3 * k, 0)]
    );
    // Zero chunks were never fetched.
    assert_eq!(reader.stats().chunks_fetched, 11);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_chunk_is_eio_for_its_request_only() {
    let fixture = common::fixed(image(), CHUNK).await;
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default().readahead_chunks(0),
    );
    let missing = fixture.index.chunk(2).unwrap().digest;
    fixture.memory.remove(&missing);
    let (address, stop) = serve(reader).await;
    let mut c = connect(address).await;
    let reply = c.read(2 * CHUNK as u64 + 10, 100).await.unwrap();
    assert_eq!(reply.error, Some(5), "EIO");
    let reply = c.read(0, CHUNK as u32).await.unwrap();
    assert!(reply.data == fixture.image[..CHUNK], "the next read works");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_requests_fill_the_shared_cache_for_other_connections() {
    let fixture = common::dynamic(image(), &[50_000, 70_001, 9_999]).await;
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default().readahead_chunks(0),
    );
    let (address, stop) = serve(reader.clone()).await;
    let mut first = connect(address).await;
    first.send(CMD_CACHE, 0, 0, 200_000).await.unwrap();
    assert_eq!(first.reply(0, 0).await.unwrap().1.error, None);
    let fetched = reader.stats().chunks_fetched;
    assert!(fetched > 0);
    let mut second = connect(address).await;
    let reply = second.read(0, 200_000).await.unwrap();
    assert!(reply.data == fixture.image[..200_000]);
    assert_eq!(
        reader.stats().chunks_fetched,
        fetched,
        "served from the cache"
    );
    stop.cancel();
}
