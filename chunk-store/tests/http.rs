//! The read-only HTTP store against a real web server (`python3 -m http.server`) publishing a
//! PBS datastore and a casync store: layouts found from the first chunk, missing chunks,
//! refused writes.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

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
