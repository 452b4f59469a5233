//! The read-only HTTP store against a real web server (`python3 -m http.server`) publishing a
//! PBS datastore and a casync store: layouts found from the first chunk, missing chunks,
//! refused writes.

#![allow(clippy::unwrap_used, clippy::panic)] // tests unwrap and panic: a failure is the test failing

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_chunk_store::conformance::{ReadOnlyTarget, check_read_only_store, sample_chunk};
use cairn_chunk_store::*;

/// `python3 -m http.server` over `dir`, killed on drop.
struct WebServer {
    child: Child,
    url: String,
}

impl WebServer {
    fn start(dir: &Path) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            assert!(
                std::env::var_os("CAIRN_REQUIRE_INTEROP").is_none(),
                "python3 is missing"
            );
            return None;
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the web server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn published(
    local: Arc<dyn ChunkStore>,
    algorithm: DigestAlgorithm,
) -> Vec<(Digest, Vec<u8>)> {
    let source = ChunkSource::new(local, algorithm);
    let mut chunks = Vec::new();
    for seed in 0..6 {
        let data = sample_chunk(seed, 10_000 + seed as usize * 7_777);
        let (digest, _) = source.write(data.clone()).await.unwrap();
        chunks.push((digest, data));
    }
    chunks
}

async fn reads_back(
    url: &str,
    algorithm: DigestAlgorithm,
    chunks: &[(Digest, Vec<u8>)],
    expected: ObjectLayout,
) {
    let store = HttpStore::new(url, &HttpOptions::default()).unwrap();
    assert_eq!(store.layout(), None, "not known before the first chunk");
    let source = ChunkSource::new(Arc::new(store.clone()), algorithm);
    for (digest, data) in chunks {
        assert_eq!(&source.read(digest, data.len()).await.unwrap(), data);
        assert!(store.contains(digest).await.unwrap());
    }
    assert_eq!(store.layout(), Some(expected));
    let missing = store.get(&[9u8; 32]).await.unwrap_err();
    assert!(missing.is_missing(), "{missing}");
    assert!(missing.to_string().contains(url), "{missing}");
    assert!(!store.contains(&[9u8; 32]).await.unwrap());
    let refused = store.put(&[9u8; 32], vec![1, 2, 3]).await.unwrap_err();
    assert!(refused.to_string().contains("read-only"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbs_datastore_and_a_casync_store_read_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let pbs = PbsDatastore::create(dir.path().join("datastore")).unwrap();
    let pbs_chunks = published(Arc::new(pbs), DigestAlgorithm::Sha256).await;
    let castr = CastrStore::create(dir.path().join("default.castr")).unwrap();
    let castr_chunks = published(Arc::new(castr), DigestAlgorithm::Sha512_256).await;
    let Some(server) = WebServer::start(dir.path()) else {
        return;
    };
    reads_back(
        &format!("{}/datastore", server.url),
        DigestAlgorithm::Sha256,
        &pbs_chunks,
        ObjectLayout::Pbs,
    )
    .await;
    reads_back(
        &format!("{}/default.castr/", server.url),
        DigestAlgorithm::Sha512_256,
        &castr_chunks,
        ObjectLayout::Castr,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable_and_urls_are_checked() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut options = HttpOptions::default();
    options.retries = 1;
    options.layout = Some(ObjectLayout::Castr);
    let store = HttpStore::new(&format!("http://127.0.0.1:{port}/store"), &options).unwrap();
    let error = store.get(&[1u8; 32]).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    assert!(HttpStore::new("ftp://example/x", &HttpOptions::default()).is_err());
}

/// An HTTP store over a local store published by a web server.
struct OverHttp {
    backing: Arc<dyn ChunkStore>,
    store: HttpStore,
    algorithm: DigestAlgorithm,
    damage: Box<dyn Fn(&Digest) + Send + Sync>,
}

impl ReadOnlyTarget for OverHttp {
    fn store(&self) -> Arc<dyn ChunkStore> {
        Arc::new(self.store.clone())
    }
    fn backing(&self) -> Arc<dyn ChunkStore> {
        Arc::clone(&self.backing)
    }
    fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }
    fn damage(&self, digest: &Digest) {
        (self.damage)(digest);
    }
}

fn flip_last_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_layouts_over_a_web_server_pass_the_read_only_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = WebServer::start(dir.path()) else {
        return;
    };
    let pbs = PbsDatastore::create(dir.path().join("datastore")).unwrap();
    let castr = CastrStore::create(dir.path().join("default.castr")).unwrap();
    let (p, c) = (pbs.clone(), castr.clone());
    let targets = [
        OverHttp {
            backing: Arc::new(pbs),
            store: HttpStore::new(
                &format!("{}/datastore", server.url),
                &HttpOptions::default(),
            )
            .unwrap(),
            algorithm: DigestAlgorithm::Sha256,
            damage: Box::new(move |d| flip_last_byte(&p.chunk_path(d))),
        },
        OverHttp {
            backing: Arc::new(castr),
            store: HttpStore::new(
                &format!("{}/default.castr", server.url),
                &HttpOptions::default(),
            )
            .unwrap(),
            algorithm: DigestAlgorithm::Sha512_256,
            damage: Box::new(move |d| {
                std::fs::write(c.chunk_path(d), b"\x28\xb5\x2f\xfd broken frame").unwrap();
            }),
        },
    ];
    for target in &targets {
        check_read_only_store(target).await;
    }
}

/// A hostile web server: every GET is answered 200 with `Content-Length: announced`, then as
/// many bytes as the client takes (zeros), up to that. Counts the bytes it got out.
struct Hostile {
    url: String,
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl Hostile {
    async fn start(announced: u64) -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/store", listener.local_addr().unwrap());
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\n\r\n");
                    if socket.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    let zeros = vec![0u8; 1 << 16];
                    let mut left = announced;
                    while left > 0 {
                        let now = left.min(zeros.len() as u64) as usize;
                        if socket.write_all(&zeros[..now]).await.is_err() {
                            return;
                        }
                        counter.fetch_add(now as u64, std::sync::atomic::Ordering::Relaxed);
                        left -= now as u64;
                    }
                });
            }
        });
        Self { url, sent }
    }

    fn store(&self) -> HttpStore {
        let mut options = HttpOptions::default();
        options.layout = Some(ObjectLayout::Pbs);
        options.retries = 0;
        HttpStore::new(&self.url, &options).unwrap()
    }

    fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_announcing_more_than_any_chunk_is_refused_before_its_body_is_read() {
    let hostile = Hostile::start(1 << 30).await;
    let store = hostile.store();
    let digest = [7u8; 32];
    let error = store.get(&digest).await.unwrap_err();
    match &error {
        StoreError::Oversized {
            size,
            limit,
            location,
            ..
        } => {
            assert_eq!(*size, 1 << 30);
            assert_eq!(*limit, MAX_ENCODED_CHUNK);
            assert!(location.to_string().starts_with(&hostile.url), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(error.is_bad_chunk(), "{error}");
    // Objects (an index, say) are bounded by their caller's limit, as announced.
    let error = store.read_object("x.didx", 1 << 20).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Oversized { size, .. } if size == 1 << 30),
        "{error}"
    );
    // The client let go after the headers: what the server got out is what the sockets
    // buffer, nowhere near the gigabyte.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(hostile.sent() < 64 << 20, "{} bytes sent", hostile.sent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_long_for_its_chunk_is_a_bad_copy_and_the_next_store_serves() {
    // 64 KiB where a 4 KiB chunk belongs: more than any encoding of it, so refused from the
    // announced length, and a chain moves on to its next store.
    let hostile = Hostile::start(64 << 10).await;
    let good = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let data = sample_chunk(3, 4096);
    let (digest, _) = ChunkSource::new(good.clone(), DigestAlgorithm::Sha256)
        .write(data.clone())
        .await
        .unwrap();
    let alone = ChunkSource::new(Arc::new(hostile.store()), DigestAlgorithm::Sha256);
    let error = alone.read(&digest, data.len()).await.unwrap_err();
    match &error {
        StoreError::Oversized { size, limit, .. } => {
            assert_eq!((*size, *limit), (64 << 10, max_encoded_len(4096)));
        }
        other => panic!("{other:?}"),
    }
    let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&reports);
    let chain = StoreChain::new(vec![Arc::new(hostile.store()), good])
        .unwrap()
        .with_report(move |error| log.lock().unwrap().push(error.to_string()));
    let source = ChunkSource::new(Arc::new(chain), DigestAlgorithm::Sha256);
    assert_eq!(source.read(&digest, data.len()).await.unwrap(), data);
    let reports = reports.lock().unwrap().clone();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].contains("over the"), "{reports:?}");
}
