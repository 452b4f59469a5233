//! The server over real TCP and Unix sockets, against an in-memory export and its bytes as the
//! model: reads, holes, block status, refused writes, bad requests, limits and shutdown.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cairn_nbd::protocol::{
    CMD_BLOCK_STATUS, CMD_CACHE, CMD_FLAG_DF, CMD_FLAG_REQ_ONE, CMD_FLUSH, CMD_READ, CMD_TRIM,
    CMD_WRITE, CMD_WRITE_ZEROES, FLAG_CAN_MULTI_CONN, FLAG_READ_ONLY, FLAG_SEND_DF, STATE_HOLE,
    STATE_ZERO,
};
use cairn_nbd::testing::Client;
use cairn_nbd::{Export, ExportError, MemoryExport, Segment, Server, ServerOptions, Session};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;

/// 1 MiB: data, a 256 KiB zero run, data, a 4 KiB zero block, data.
fn image() -> Vec<u8> {
    let mut image: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8 | 1).collect();
    image[256 << 10..512 << 10].fill(0);
    image[(768 << 10)..(772 << 10)].fill(0);
    image
}

struct Running {
    address: std::net::SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), cairn_nbd::NbdError>>,
}

async fn serve(exports: Vec<(&str, Arc<dyn Export>)>, options: ServerOptions) -> Running {
    let server = Server::new(exports.into_iter().map(|(n, e)| (n.to_owned(), e)), options).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { server.serve_tcp(listener, stop).await }
    });
    Running {
        address,
        stop,
        task,
    }
}

async fn memory(image: &[u8]) -> Running {
    let export: Arc<dyn Export> = Arc::new(MemoryExport::new(image.to_vec()));
    serve(vec![("disk", export)], ServerOptions::default()).await
}

async fn client(running: &Running, structured: bool) -> Client<TcpStream> {
    let stream = TcpStream::connect(running.address).await.unwrap();
    Client::connect(stream, "disk", structured).await.unwrap()
}

#[tokio::test]
async fn reads_match_the_image_with_and_without_structured_replies() {
    let image = image();
    let running = memory(&image).await;
    for structured in [false, true] {
        let mut c = client(&running, structured).await;
        assert_eq!(c.size, image.len() as u64);
        assert_ne!(c.flags & FLAG_READ_ONLY, 0);
        assert_ne!(c.flags & FLAG_CAN_MULTI_CONN, 0);
        assert_eq!(c.flags & FLAG_SEND_DF != 0, structured);
        for (offset, length) in [
            (0u64, 4096u32),
            (1, 1),
            (200_000, 400_000),
            (0, 1 << 20),
            (1_048_575, 1),
            (5, 0),
        ] {
            let reply = c.read(offset, length).await.unwrap();
            assert_eq!(reply.error, None);
            assert!(
                reply.data == image[offset as usize..(offset + u64::from(length)) as usize],
                "read {offset}+{length} structured={structured}: got {} bytes, first {:?}",
                reply.data.len(),
                &reply.data[..reply.data.len().min(8)]
            );
            if structured && offset == 0 && length == 1 << 20 {
                // The zero run went out as a hole, not as bytes.
                assert_eq!(reply.hole_bytes, 256 << 10);
            }
        }
        c.disconnect().await.unwrap();
    }
    running.stop.cancel();
    running.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn dont_fragment_reads_come_in_one_chunk_with_zeros_inline() {
    let image = image();
    let running = memory(&image).await;
    let mut c = client(&running, true).await;
    let cookie = c
        .send(CMD_READ, CMD_FLAG_DF, 200_000, 400_000)
        .await
        .unwrap();
    let (got, reply) = c.reply(200_000, 400_000).await.unwrap();
    assert_eq!(got, cookie);
    assert_eq!(reply.chunks, 1);
    assert_eq!(reply.hole_bytes, 0);
    assert_eq!(reply.data, image[200_000..600_000]);
}

#[tokio::test]
async fn block_status_reports_zero_runs_as_holes() {
    let image = image();
    let running = memory(&image).await;
    let mut c = client(&running, true).await;
    let cookie = c.send(CMD_BLOCK_STATUS, 0, 0, 1 << 20).await.unwrap();
    let (got, reply) = c.reply(0, 0).await.unwrap();
    assert_eq!(got, cookie);
    let z = STATE_HOLE | STATE_ZERO;
    assert_eq!(
        reply.extents,
        [
            (256 << 10, 0),
            (256 << 10, z),
            (256 << 10, 0),
            (4 << 10, z),
            (252 << 10, 0)
        ]
    );
    // One extent, within the request, when asked.
    c.send(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 300 << 10, 100)
        .await
        .unwrap();
    let (_, reply) = c.reply(0, 0).await.unwrap();
    assert_eq!(reply.extents, [(100, z)]);
    // Without base:allocation selected, block status is invalid.
    let mut plain = client(&running, false).await;
    plain.send(CMD_BLOCK_STATUS, 0, 0, 4096).await.unwrap();
    assert_eq!(plain.reply(0, 0).await.unwrap().1.error, Some(EINVAL));
}

#[tokio::test]
async fn writes_are_refused_and_the_connection_stays_in_step() {
    let image = image();
    let running = memory(&image).await;
    for structured in [false, true] {
        let mut c = client(&running, structured).await;
        c.send(CMD_WRITE, 0, 0, 512).await.unwrap();
        c.send_raw(&[0xAA; 512]).await.unwrap();
        assert_eq!(c.reply(0, 0).await.unwrap().1.error, Some(EPERM));
        for command in [CMD_TRIM, CMD_WRITE_ZEROES] {
            c.send(command, 0, 0, 512).await.unwrap();
            assert_eq!(c.reply(0, 0).await.unwrap().1.error, Some(EPERM));
        }
        c.send(CMD_FLUSH, 0, 0, 0).await.unwrap();
        assert_eq!(c.reply(0, 0).await.unwrap().1.error, None);
        let reply = c.read(0, 512).await.unwrap();
        assert_eq!(
            reply.data,
            image[..512],
            "unchanged, and the stream is in step"
        );
    }
}

#[tokio::test]
async fn bad_requests_get_einval_and_the_connection_goes_on() {
    let image = image();
    let running = memory(&image).await;
    for structured in [false, true] {
        let mut c = client(&running, structured).await;
        let size = image.len() as u64;
        for (command, flags, offset, length) in [
            (CMD_READ, 0, size, 1),
            (CMD_READ, 0, size - 10, 11),
            (CMD_READ, 0, u64::MAX, 4096),
            (CMD_READ, 0, 0, (32 << 20) + 1),
            (CMD_READ, 0, 0, u32::MAX),
            (CMD_READ, 1 << 9, 0, 512),
            (CMD_CACHE, 0, size, 1),
            (99, 0, 0, 0),
        ] {
            c.send(command, flags, offset, length).await.unwrap();
            let (_, reply) = c.reply(offset, 0).await.unwrap();
            assert_eq!(
                reply.error,
                Some(EINVAL),
                "command {command} at {offset}+{length}"
            );
        }
        if !structured {
            // DF needs structured replies.
            c.send(CMD_READ, CMD_FLAG_DF, 0, 512).await.unwrap();
            assert_eq!(c.reply(0, 512).await.unwrap().1.error, Some(EINVAL));
        }
        c.send(CMD_CACHE, 0, 0, 65536).await.unwrap();
        assert_eq!(c.reply(0, 0).await.unwrap().1.error, None);
        assert_eq!(c.read(4096, 4096).await.unwrap().data, image[4096..8192]);
    }
}

#[tokio::test]
async fn pipelined_requests_are_all_answered_by_cookie() {
    let image = image();
    let running = memory(&image).await;
    let mut c = client(&running, true).await;
    let mut expected = HashMap::new();
    for i in 0..200u64 {
        let offset = (i * 7919 * 13) % ((1 << 20) - 65536);
        let length = 1 + (i as u32 * 331) % 65536;
        let cookie = c.send(CMD_READ, 0, offset, length).await.unwrap();
        expected.insert(cookie, (offset, length));
    }
    for _ in 0..200 {
        // The client reads replies in whatever order they come; the test client needs the
        // offset, so it reads each as a full reply and checks against its request.
        let (cookie, reply) = {
            let (cookie, reply) = c.reply(0, 0).await.unwrap();
            (cookie, reply)
        };
        let (offset, length) = expected.remove(&cookie).expect("a known cookie, once");
        let mut data = reply.data;
        let start = offset as usize;
        // Data was placed at absolute offsets (base 0).
        data.resize(start + length as usize, 0);
        assert!(
            data[start..] == image[start..start + length as usize],
            "pipelined read {offset}+{length}"
        );
    }
    assert!(expected.is_empty());
}

#[tokio::test]
async fn two_clients_at_once_both_read_right() {
    let image = image();
    let running = memory(&image).await;
    let reads = (0..2).map(|n| {
        let address = running.address;
        let image = image.clone();
        tokio::spawn(async move {
            let stream = TcpStream::connect(address).await.unwrap();
            let mut c = Client::connect(stream, "disk", n == 1).await.unwrap();
            for i in 0..64u64 {
                let offset = (i * 16384 + n * 512) % (1 << 20);
                let length = 16384.min((1 << 20) - offset) as u32;
                let reply = c.read(offset, length).await.unwrap();
                assert_eq!(
                    reply.data,
                    image[offset as usize..offset as usize + length as usize]
                );
            }
        })
    });
    for read in reads.collect::<Vec<_>>() {
        read.await.unwrap();
    }
}

/// An export whose reads fail at one offset, or wait until released.
#[derive(Debug)]
struct Flaky {
    inner: MemoryExport,
    hold: Arc<AtomicBool>,
}

impl Export for Flaky {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn open(&self) -> Arc<dyn Session> {
        Arc::new(FlakySession {
            inner: self.inner.clone(),
            hold: Arc::clone(&self.hold),
        })
    }
}

struct FlakySession {
    inner: MemoryExport,
    hold: Arc<AtomicBool>,
}

#[async_trait]
impl Session for FlakySession {
    async fn read(&self, offset: u64, length: u32) -> Result<Vec<Segment>, ExportError> {
        if offset == 4096 {
            return Err(ExportError::new(
                "read",
                offset,
                u64::from(length),
                "chunk 1 is missing",
            ));
        }
        if offset == 8192 {
            // A wrong answer from the export: never sent as if it were right.
            return Ok(vec![Segment::Zeros(1)]);
        }
        while self.hold.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.read(offset, length).await
    }
}

#[tokio::test]
async fn export_failures_become_eio_for_that_request_only() {
    let image = image();
    let export: Arc<dyn Export> = Arc::new(Flaky {
        inner: MemoryExport::new(image.clone()),
        hold: Arc::new(AtomicBool::new(false)),
    });
    let running = serve(vec![("disk", export)], ServerOptions::default()).await;
    for structured in [false, true] {
        let mut c = client(&running, structured).await;
        assert_eq!(c.read(4096, 4096).await.unwrap().error, Some(EIO));
        assert_eq!(c.read(8192, 4096).await.unwrap().error, Some(EIO));
        assert_eq!(c.read(0, 4096).await.unwrap().data, image[..4096]);
    }
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let image = image();
    let hold = Arc::new(AtomicBool::new(true));
    let export: Arc<dyn Export> = Arc::new(Flaky {
        inner: MemoryExport::new(image.clone()),
        hold: Arc::clone(&hold),
    });
    let running = serve(vec![("disk", export)], ServerOptions::default()).await;
    let mut c = client(&running, true).await;
    let cookie = c.send(CMD_READ, 0, 0, 65536).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    running.stop.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    hold.store(false, Ordering::Relaxed);
    let (got, reply) = c.reply(0, 65536).await.unwrap();
    assert_eq!(got, cookie);
    assert_eq!(reply.data, image[..65536]);
    tokio::time::timeout(Duration::from_secs(5), running.task)
        .await
        .expect("the server stopped")
        .unwrap()
        .unwrap();
    // Nothing listens any more.
    assert!(TcpStream::connect(running.address).await.is_err());
}

/// A raw connection that reads the greeting, sends `bytes`, and returns what came back before
/// the server closed.
async fn hostile(address: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut greeting = [0u8; 18];
    stream.read_exact(&mut greeting).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the server closed the connection");
    rest
}

#[tokio::test]
async fn hostile_clients_lose_only_their_own_connection() {
    let image = image();
    let running = memory(&image).await;
    let mut good = client(&running, true).await;
    // Unknown client flags, a wrong option magic, a 4 GiB option, an unknown export by name.
    hostile(running.address, &[0, 0, 0, 0xff]).await;
    hostile(
        running.address,
        &[0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 7, 0, 0, 0, 0],
    )
    .await;
    let mut big = cairn_nbd::testing::client_flags();
    big.extend(b"IHAVEOPT\0\0\0\x07\xff\xff\xff\xff");
    hostile(running.address, &big).await;
    let mut unknown = cairn_nbd::testing::client_flags();
    unknown.extend(cairn_nbd::testing::option(1, b"nope"));
    assert!(hostile(running.address, &unknown).await.is_empty());
    // In transmission: a bad request magic, a 4 GiB write.
    let mut raw = client(&running, false).await;
    raw.send_raw(&[0x55; 28]).await.unwrap();
    assert!(raw.reply(0, 0).await.is_err(), "closed");
    let mut raw = client(&running, false).await;
    raw.send(CMD_WRITE, 0, 0, u32::MAX).await.unwrap();
    assert!(raw.reply(0, 0).await.is_err(), "closed");
    // A 4 GiB read is refused, not attempted.
    let mut big_read = client(&running, true).await;
    big_read.send(CMD_READ, 0, 0, u32::MAX).await.unwrap();
    assert_eq!(big_read.reply(0, 0).await.unwrap().1.error, Some(EINVAL));
    // Hundreds of connections opened and dropped.
    for _ in 0..300 {
        drop(TcpStream::connect(running.address).await.unwrap());
    }
    assert_eq!(good.read(0, 4096).await.unwrap().data, image[..4096]);
    let mut late = client(&running, true).await;
    assert_eq!(
        late.read(500_000, 4096).await.unwrap().data,
        image[500_000..504_096]
    );
}

#[tokio::test]
async fn stalled_handshakes_time_out_and_the_connection_limit_holds() {
    let image = image();
    let export: Arc<dyn Export> = Arc::new(MemoryExport::new(image.clone()));
    let options = ServerOptions::default()
        .max_connections(2)
        .handshake_timeout(Duration::from_secs(3));
    let running = serve(vec![("disk", export)], options).await;
    let mut first = TcpStream::connect(running.address).await.unwrap();
    let mut second = TcpStream::connect(running.address).await.unwrap();
    let mut greeting = [0u8; 18];
    first.read_exact(&mut greeting).await.unwrap();
    second.read_exact(&mut greeting).await.unwrap();
    // A third waits a second for a slot, then is closed.
    let mut third = TcpStream::connect(running.address).await.unwrap();
    let mut rest = Vec::new();
    third.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    // The two stalled ones time out, and their slots come back.
    for stalled in [&mut first, &mut second] {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut rest))
            .await
            .expect("timed out by the server")
            .unwrap();
    }
    let mut c = client(&running, true).await;
    assert_eq!(c.read(0, 100).await.unwrap().data, image[..100]);
}

#[tokio::test]
async fn unix_sockets_serve_the_same() {
    let image = image();
    let export: Arc<dyn Export> = Arc::new(MemoryExport::new(image.clone()));
    let server = Server::new([("disk".to_owned(), export)], ServerOptions::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("cairn-nbd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nbd.sock");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { server.serve_unix(listener, stop).await }
    });
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let mut c = Client::connect(stream, "disk", true).await.unwrap();
    assert_eq!(c.read(1000, 5000).await.unwrap().data, image[1000..6000]);
    c.disconnect().await.unwrap();
    stop.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_read_and_block_status_agree_with_the_bytes(
        offset in 0u64..(1 << 20),
        length in 1u32..(300 << 10),
        structured: bool,
    ) {
        let image = image();
        let length = length.min(((1u64 << 20) - offset) as u32).max(1);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let running = memory(&image).await;
            let mut c = client(&running, structured).await;
            let reply = c.read(offset, length).await.unwrap();
            assert!(reply.data == image[offset as usize..(offset + u64::from(length)) as usize], "read {offset}+{length} structured={structured}: got {} bytes, first {:?}", reply.data.len(), &reply.data[..reply.data.len().min(8)]);
            if structured {
                c.send(CMD_BLOCK_STATUS, 0, offset, length).await.unwrap();
                let (_, status) = c.reply(0, 0).await.unwrap();
                let mut at = offset as usize;
                for (len, flags) in status.extents {
                    let part = &image[at..at + len as usize];
                    if flags & STATE_ZERO != 0 {
                        assert!(part.iter().all(|&b| b == 0), "zero extent at {at} has data");
                    } else {
                        assert!(part.iter().any(|&b| b != 0), "data extent at {at} is all zeros");
                    }
                    at += len as usize;
                }
                assert_eq!(at as u64, offset + u64::from(length));
            }
            running.stop.cancel();
            running.task.await.unwrap().unwrap();
        });
    }
}

/// Reads until the server closes the stream (or it fails); how many bytes came.
async fn until_closed(mut stream: TcpStream, within: Duration) -> Option<u64> {
    tokio::time::timeout(within, async move {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_only_its_share_and_then_loses_its_connection() {
    let image: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8 | 1).collect();
    let export: Arc<dyn Export> = Arc::new(MemoryExport::new(image.clone()));
    let options = ServerOptions::default().write_timeout(Duration::from_secs(2));
    let running = serve(vec![("disk", export)], options).await;
    // Eight reads of 32 MiB, the whole server budget, and not a byte of the replies read.
    let mut stalled = client(&running, true).await;
    for i in 0..8u64 {
        stalled
            .send(CMD_READ, 0, (i % 2) << 25, 32 << 20)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another client is served at once, small reads and large.
    let mut other = client(&running, true).await;
    let quick = tokio::time::timeout(Duration::from_secs(1), async {
        for (offset, length) in [(4096u64, 4096u32), (1 << 20, 32 << 20)] {
            let reply = other.read(offset, length).await.unwrap();
            let range = offset as usize..offset as usize + length as usize;
            assert!(reply.data == image[range]);
        }
    })
    .await;
    assert!(quick.is_ok(), "a client that stops reading slowed another");
    // The write timeout (2 s of no progress) closes the stalled connection, still unread; its
    // budget comes back, so four clients can each have 64 MiB of reads in flight.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = until_closed(stalled.into_stream(), Duration::from_secs(10)).await;
    let got = got.expect("the stalled connection was never closed");
    assert!(
        got < 256 << 20,
        "{got} bytes: every reply was written after all"
    );
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(client(&running, true).await);
    }
    let all = tokio::time::timeout(Duration::from_secs(20), async {
        for c in &mut clients {
            c.send(CMD_READ, 0, 0, 32 << 20).await.unwrap();
            c.send(CMD_READ, 0, 32 << 20, 32 << 20).await.unwrap();
        }
        for c in &mut clients {
            let (_, first) = c.reply(0, 32 << 20).await.unwrap();
            let (_, second) = c.reply(32 << 20, 32 << 20).await.unwrap();
            assert_eq!(first.data.len() + second.data.len(), 64 << 20);
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "the stalled connection's budget never came back"
    );
    running.stop.cancel();
    running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_only_when_asked_and_never_while_a_request_runs() {
    let image = image();
    // By default, an idle connection stays (qemu and the kernel's client keep theirs).
    let running = memory(&image).await;
    let idle = client(&running, true).await.into_stream();
    assert_eq!(until_closed(idle, Duration::from_millis(1500)).await, None);
    // With an idle timeout, it is closed after it.
    let export: Arc<dyn Export> = Arc::new(MemoryExport::new(image.clone()));
    let options = ServerOptions::default().idle_timeout(Some(Duration::from_millis(500)));
    let running = serve(vec![("disk", export)], options).await;
    let started = std::time::Instant::now();
    let idle = client(&running, true).await.into_stream();
    assert_eq!(until_closed(idle, Duration::from_secs(5)).await, Some(0));
    assert!(started.elapsed() >= Duration::from_millis(500));
    // A connection that keeps asking is not idle.
    let mut busy = client(&running, true).await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(busy.read(0, 4096).await.unwrap().data, image[..4096]);
    }
}
