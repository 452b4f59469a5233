//! cairn's own HTTP chunk server (`serve::serve_http`) under cairn's HTTP store: the read-only
//! conformance suite in both layouts, whichever encoding the served store keeps.

#![allow(clippy::unwrap_used, clippy::panic)] // tests unwrap and panic: a failure is the test failing

use std::sync::Arc;

use cairn_chunk_store::conformance::{ReadOnlyTarget, check_read_only_store};
use cairn_chunk_store::serve::{ServeOptions, serve_http};
use cairn_chunk_store::*;

struct Served {
    backing: Arc<MemoryStore>,
    store: HttpStore,
    algorithm: DigestAlgorithm,
}

impl ReadOnlyTarget for Served {
    fn store(&self) -> Arc<dyn ChunkStore> {
        Arc::new(self.store.clone())
    }
    fn backing(&self) -> Arc<dyn ChunkStore> {
        self.backing.clone()
    }
    fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }
    fn damage(&self, digest: &Digest) {
        self.backing.set_raw(*digest, b"garbage".to_vec());
    }
}

/// Serves `backing` on a free port; the URL.
async fn serve(backing: Arc<MemoryStore>) -> String {
    serve_with(backing, ServeOptions::default()).await
}

/// Serves `store` on a free port with `options`; the URL.
async fn serve_with(store: Arc<dyn ChunkStore>, options: ServeOptions) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve_http(listener, store, options, std::future::pending()));
    url
}

/// One raw HTTP/1.1 request to `url` (`http://HOST:PORT`): the status, the head and the body.
async fn request(url: &str, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let text = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let end = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&reply[..end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, reply[end + 4..].to_vec())
}

fn pbs_path(digest: &Digest) -> String {
    let hex = to_hex(digest);
    format!("/.chunks/{}/{hex}", &hex[..4])
}

fn casync_path(digest: &Digest) -> String {
    let hex = to_hex(digest);
    format!("/{}/{hex}.cacnk", &hex[..4])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_served_in_either_layout_passes_the_read_only_suite() {
    for (encoding, algorithm) in [
        (ChunkEncoding::PbsBlob, DigestAlgorithm::Sha256),
        (ChunkEncoding::CasyncCompressed, DigestAlgorithm::Sha512_256),
    ] {
        for layout in [ObjectLayout::Pbs, ObjectLayout::Castr] {
            let backing = Arc::new(MemoryStore::new(encoding));
            let url = serve(backing.clone()).await;
            let mut options = HttpOptions::default();
            options.layout = Some(layout);
            let store = HttpStore::new(&url, &options).unwrap();
            check_read_only_store(&Served {
                backing,
                store,
                algorithm,
            })
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_chunk_and_never_where_it_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let datastore = PbsDatastore::create(dir.path().join("secret-datastore")).unwrap();
    let source = ChunkSource::new(Arc::new(datastore.clone()), DigestAlgorithm::Sha256);
    let (digest, _) = source.write(b"a chunk".to_vec()).await.unwrap();
    // A folder where the chunk file belongs: the store cannot read it.
    let path = datastore.chunk_path(&digest);
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let url = serve_with(Arc::new(datastore), ServeOptions::default()).await;
    let (status, _, body) = request(&url, "GET", &pbs_path(&digest)).await;
    assert_eq!(status, 500);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains(&to_hex(&digest)), "{body}");
    assert!(
        !body.contains("secret-datastore") && !body.contains(".chunks"),
        "{body}"
    );
    // An unavailable origin: a 503 that names no bucket or key.
    let mut options = HttpOptions::default();
    options.layout = Some(ObjectLayout::Pbs);
    options.retries = 0;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = HttpStore::new(&format!("http://127.0.0.1:{port}/secret-prefix"), &options).unwrap();
    let url = serve_with(Arc::new(gone), ServeOptions::default()).await;
    let (status, _, body) = request(&url, "GET", &pbs_path(&digest)).await;
    assert_eq!(status, 503);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("unavailable") && !body.contains("secret-prefix"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_reads_nothing_where_the_chunk_is_kept_as_asked() {
    let backing = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let counted = Arc::new(fault::FaultStore::new(backing.clone()));
    let data = sample(70_000);
    let (digest, _) = ChunkSource::new(backing.clone(), DigestAlgorithm::Sha256)
        .write(data.clone())
        .await
        .unwrap();
    let stored = backing.get(&digest).await.unwrap().bytes;
    let url = serve_with(counted.clone(), ServeOptions::default()).await;
    let (status, head, body) = request(&url, "HEAD", &pbs_path(&digest)).await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert!(
        head.to_lowercase()
            .contains(&format!("content-length: {}", stored.len())),
        "{head}"
    );
    assert_eq!(counted.gets_of(&digest), 0, "HEAD read the chunk");
    // In the other layout the length is only known by encoding it: then it is read, and the
    // length is the body a GET gets.
    let (status, head, _) = request(&url, "HEAD", &casync_path(&digest)).await;
    let (_, _, body) = request(&url, "GET", &casync_path(&digest)).await;
    assert_eq!(status, 200);
    assert!(
        head.to_lowercase()
            .contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    assert_eq!(decode_casync_chunk(&body, data.len()).unwrap(), data);
}

fn sample(len: usize) -> Vec<u8> {
    cairn_chunk_store::conformance::sample_chunk(5, len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_encoding_waits_for_the_shared_cpu_limit() {
    let backing = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let (digest, _) = ChunkSource::new(backing.clone(), DigestAlgorithm::Sha256)
        .write(sample(50_000))
        .await
        .unwrap();
    let cpu = CpuLimit::threads(1);
    let mut options = ServeOptions::default();
    options.cpu = cpu.clone();
    let url = serve_with(backing, options).await;
    // Something else of this process holds the one turn for a second.
    let busy = tokio::spawn({
        let cpu = cpu.clone();
        async move {
            cpu.run(|| std::thread::sleep(std::time::Duration::from_secs(1)))
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let (status, _, _) = request(&url, "GET", &pbs_path(&digest)).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "kept as asked: no CPU"
    );
    let (status, _, _) = request(&url, "GET", &casync_path(&digest)).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(800),
        "re-encoded without waiting for the CPU limit"
    );
    busy.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_its_bytes_only_until_the_write_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let backing = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let source = ChunkSource::new(backing.clone(), DigestAlgorithm::Sha256);
    // A chunk too large for the sockets to swallow (and for zstd to shrink), and the budget
    // exactly its size.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..32 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let (big, _) = source.write(noise).await.unwrap();
    let (small, _) = source.write(sample(1000)).await.unwrap();
    let size = backing.get(&big).await.unwrap().bytes.len() as u64;
    let mut options = ServeOptions::default();
    options.bytes_in_flight = size;
    options.write_timeout = std::time::Duration::from_secs(1);
    let url = serve_with(backing, options).await;
    let address = url.trim_start_matches("http://").to_owned();
    // The first client asks for the big chunk and never reads: its body holds the budget.
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    let ask = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", pbs_path(&big));
    stalled.write_all(ask.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The next response waits for the budget, until the stalled one is cut off.
    let started = std::time::Instant::now();
    let (status, _, _) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        request(&url, "GET", &pbs_path(&small)),
    )
    .await
    .expect("the budget never came back");
    assert_eq!(status, 200);
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(500),
        "{waited:?}: no budget held"
    );
    drop(stalled);
}
