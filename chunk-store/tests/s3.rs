//! The S3 store against an S3 server running in the test process (s3s over a folder): the
//! conformance suite in both layouts, create-only puts, and the typed errors.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::PathBuf;
use std::sync::Arc;

use cairn_chunk_store::conformance::{ConformanceTarget, check_store, sample_chunk};
use cairn_chunk_store::*;

const ACCESS_KEY: &str = "cairn-test";
const SECRET_KEY: &str = "cairn-test-secret-key";

/// An S3 server on 127.0.0.1 over a temporary folder, with one bucket.
struct Server {
    endpoint: String,
    root: tempfile::TempDir,
}

impl Server {
    async fn start(bucket: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(bucket)).unwrap();
        let endpoint = serve_s3(root.path(), ACCESS_KEY, SECRET_KEY).await.unwrap();
        Self { endpoint, root }
    }

    fn options(&self, secret: &str) -> S3Options {
        let mut options = S3Options::default();
        options.endpoint = Some(self.endpoint.clone());
        options.allow_http = true;
        options.access_key_id = Some(ACCESS_KEY.to_owned());
        options.secret_access_key = Some(secret.to_owned());
        options.retries = 1;
        options
    }

    fn object(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }
}

struct S3Target {
    server: Server,
    store: S3Store,
}

impl ConformanceTarget for S3Target {
    fn store(&self) -> Arc<dyn ChunkStore> {
        Arc::new(self.store.clone())
    }
    fn algorithm(&self) -> DigestAlgorithm {
        match self.store.layout() {
            ObjectLayout::Castr => DigestAlgorithm::Sha512_256,
            _ => DigestAlgorithm::Sha256,
        }
    }
    fn damage(&self, digest: &Digest) {
        let path = self
            .server
            .object(self.store.bucket(), &self.store.chunk_key(digest));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(path, bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pbs_layout_passes_the_conformance_suite() {
    let server = Server::start("backups").await;
    let store = S3Store::new(
        "backups",
        "ds1",
        ObjectLayout::Pbs,
        &server.options(SECRET_KEY),
    )
    .unwrap();
    let target = S3Target { server, store };
    check_store(&target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_castr_layout_passes_the_conformance_suite() {
    let server = Server::start("casync").await;
    let store = S3Store::new(
        "casync",
        "",
        ObjectLayout::Castr,
        &server.options(SECRET_KEY),
    )
    .unwrap();
    let target = S3Target { server, store };
    check_store(&target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_land_where_pbs_4_keeps_them_and_puts_never_overwrite() {
    let server = Server::start("bucket").await;
    let store = S3Store::new(
        "bucket",
        "/store/",
        ObjectLayout::Pbs,
        &server.options(SECRET_KEY),
    )
    .unwrap();
    assert_eq!(&**store.name(), "s3://bucket/store");
    let source = ChunkSource::new(Arc::new(store.clone()), DigestAlgorithm::Sha256);
    let data = sample_chunk(1, 100_000);
    let (digest, outcome) = source.write(data.clone()).await.unwrap();
    assert_eq!(outcome, PutOutcome::Inserted);
    let hex = to_hex(&digest);
    let path = server.object("bucket", &format!("store/.chunks/{}/{hex}", &hex[..4]));
    let stored = std::fs::read(&path).unwrap();
    assert_eq!(
        decode_blob(&stored, data.len()).unwrap(),
        data,
        "the object is a DataBlob"
    );
    // A second writer with other bytes finds it present and changes nothing.
    assert_eq!(
        store.put(&digest, b"other bytes".to_vec()).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert_eq!(std::fs::read(&path).unwrap(), stored);
    assert_eq!(source.read(&digest, data.len()).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_chunks_and_denied_requests_are_different_errors_naming_bucket_and_key() {
    let server = Server::start("bucket").await;
    let store = S3Store::new(
        "bucket",
        "ds",
        ObjectLayout::Pbs,
        &server.options(SECRET_KEY),
    )
    .unwrap();
    let digest = [7u8; 32];
    let key = store.chunk_key(&digest);
    let missing = store.get(&digest).await.unwrap_err();
    assert!(missing.is_missing(), "{missing}");
    assert!(
        missing.to_string().contains(&format!("s3://bucket/{key}")),
        "{missing}"
    );
    assert!(!store.contains(&digest).await.unwrap());

    let wrong = S3Store::new(
        "bucket",
        "ds",
        ObjectLayout::Pbs,
        &server.options("not-the-secret"),
    )
    .unwrap();
    let denied = wrong.get(&digest).await.unwrap_err();
    assert!(matches!(denied, StoreError::Denied { .. }), "{denied:?}");
    let text = denied.to_string();
    assert!(
        text.contains("access denied") && text.contains(&format!("s3://bucket/{key}")),
        "{text}"
    );
    let mut chain = String::new();
    let mut cause: Option<&dyn std::error::Error> = Some(&denied);
    while let Some(error) = cause {
        chain.push_str(&error.to_string());
        cause = error.source();
    }
    assert!(
        !chain.contains("not-the-secret"),
        "the secret leaked: {chain}"
    );
    assert!(matches!(
        wrong.put(&digest, vec![1]).await.unwrap_err(),
        StoreError::Denied { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_service_is_unavailable_not_missing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut options = S3Options::default();
    options.endpoint = Some(endpoint);
    options.allow_http = true;
    options.access_key_id = Some(ACCESS_KEY.to_owned());
    options.secret_access_key = Some(SECRET_KEY.to_owned());
    options.retries = 1;
    let store = S3Store::new("bucket", "", ObjectLayout::Pbs, &options).unwrap();
    let error = store.get(&[1u8; 32]).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    assert!(!error.is_missing());
}

mod support {
    pub(crate) mod fault_proxy;
    pub(crate) mod s3_server;
}
use support::fault_proxy::{Fault, FaultProxy};
use support::s3_server::serve_s3;

/// A store whose requests go through `proxy`, with short timeouts and `retries`.
fn proxied(server: &Server, proxy: &FaultProxy, bucket: &str, retries: usize) -> S3Store {
    let mut options = server.options(SECRET_KEY);
    options.endpoint = Some(proxy.endpoint.clone());
    options.retries = retries;
    options.timeout = std::time::Duration::from_secs(2);
    S3Store::new(bucket, "ds", ObjectLayout::Pbs, &options).unwrap()
}

fn upstream(server: &Server) -> String {
    server.endpoint.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_put_refused_before_its_body_is_sent_is_a_duplicate() {
    let server = Server::start("bucket").await;
    // The second put of any key is refused as soon as its head arrives, and the connection
    // closed: the client may see the 412 or a broken pipe while still sending 4 MiB.
    let proxy = FaultProxy::start(&upstream(&server), |method, _, n| match (method, n) {
        ("PUT", 1..) => Fault::RefuseEarly(412),
        _ => Fault::Pass,
    })
    .await;
    let store = proxied(&server, &proxy, "bucket", 2);
    let source = ChunkSource::new(Arc::new(store), DigestAlgorithm::Sha256);
    for seed in 0..4 {
        let data = sample_chunk(seed, 4 << 20);
        let (digest, first) = source.write(data.clone()).await.unwrap();
        assert_eq!(first, PutOutcome::Inserted);
        let (_, again) = source.write(data.clone()).await.unwrap();
        assert_eq!(again, PutOutcome::AlreadyPresent, "seed {seed}");
        assert_eq!(source.read(&digest, data.len()).await.unwrap(), data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_server_errors_and_stalls_are_retried_and_succeed() {
    let server = Server::start("bucket").await;
    let proxy = FaultProxy::start(&upstream(&server), |method, _, n| match (method, n) {
        ("PUT", 0) => Fault::Status(503),
        ("GET", 0) => Fault::Status(500),
        ("GET", 1) => Fault::Stall(std::time::Duration::from_secs(6)),
        ("HEAD", 0) => Fault::Status(503),
        _ => Fault::Pass,
    })
    .await;
    let store = proxied(&server, &proxy, "bucket", 4);
    let source = ChunkSource::new(Arc::new(store.clone()), DigestAlgorithm::Sha256);
    let data = sample_chunk(5, 300_000);
    let (digest, outcome) = source.write(data.clone()).await.unwrap();
    assert_eq!(outcome, PutOutcome::Inserted);
    assert!(store.contains(&digest).await.unwrap());
    assert_eq!(source.read(&digest, data.len()).await.unwrap(), data);
    let key = store.chunk_key(&digest);
    assert_eq!(proxy.count("PUT", &key), 2, "{:?}", proxy.seen());
    assert_eq!(proxy.count("HEAD", &key), 2, "{:?}", proxy.seen());
    assert_eq!(proxy.count("GET", &key), 3, "{:?}", proxy.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_is_access_denied_and_never_retried() {
    let server = Server::start("bucket").await;
    let proxy = FaultProxy::start(&upstream(&server), |_, _, _| Fault::Status(403)).await;
    let store = proxied(&server, &proxy, "bucket", 4);
    let digest = [3u8; 32];
    let error = store.get(&digest).await.unwrap_err();
    assert!(matches!(error, StoreError::Denied { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&store.chunk_key(&digest)),
        "{error}"
    );
    assert_eq!(proxy.seen().len(), 1, "{:?}", proxy.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_body_is_retried_or_a_typed_error_never_bad_bytes() {
    let server = Server::start("bucket").await;
    let direct = S3Store::new(
        "bucket",
        "ds",
        ObjectLayout::Pbs,
        &server.options(SECRET_KEY),
    )
    .unwrap();
    let source = ChunkSource::new(Arc::new(direct), DigestAlgorithm::Sha256);
    let data = sample_chunk(8, 1 << 20);
    let (digest, _) = source.write(data.clone()).await.unwrap();

    // Once cut short, then whole: the read succeeds with the right bytes.
    let once = FaultProxy::start(&upstream(&server), |method, _, n| match (method, n) {
        ("GET", 0) => Fault::Truncate(1000),
        _ => Fault::Pass,
    })
    .await;
    let store = proxied(&server, &once, "bucket", 3);
    let read = ChunkSource::new(Arc::new(store), DigestAlgorithm::Sha256);
    assert_eq!(read.read(&digest, data.len()).await.unwrap(), data);

    // Always cut short: a typed error, not a chunk.
    let always = FaultProxy::start(&upstream(&server), |_, _, _| Fault::Truncate(5000)).await;
    let store = proxied(&server, &always, "bucket", 2);
    let read = ChunkSource::new(Arc::new(store), DigestAlgorithm::Sha256);
    let error = read.read(&digest, data.len()).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Unavailable { .. } | StoreError::Corrupt { .. }
        ),
        "{error:?}"
    );
    assert!(!error.is_missing(), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_tier_keeps_nothing_from_a_cut_short_download() {
    let server = Server::start("bucket").await;
    let direct = S3Store::new(
        "bucket",
        "ds",
        ObjectLayout::Pbs,
        &server.options(SECRET_KEY),
    )
    .unwrap();
    let writer = ChunkSource::new(Arc::new(direct), DigestAlgorithm::Sha256);
    let data = sample_chunk(12, 1 << 20);
    let (digest, _) = writer.write(data.clone()).await.unwrap();
    let folder = tempfile::tempdir().unwrap();

    let cut = FaultProxy::start(&upstream(&server), |_, _, _| Fault::Truncate(3000)).await;
    let tier = DiskTier::open(
        folder.path(),
        64 << 20,
        Arc::new(proxied(&server, &cut, "bucket", 1)),
    )
    .unwrap();
    let source = ChunkSource::new(Arc::new(tier.clone()), DigestAlgorithm::Sha256);
    let error = source.read(&digest, data.len()).await.unwrap_err();
    assert!(!error.is_missing(), "{error}");
    let stats = tier.stats();
    assert_eq!((stats.chunks, stats.fills), (0, 0), "{stats:?}");
    assert!(
        !folder.path().join(".chunks").exists()
            || std::fs::read_dir(folder.path().join(".chunks"))
                .unwrap()
                .next()
                .is_none(),
        "nothing written"
    );

    // Whole downloads: the tier fills, and the next read needs no download. (The first tier
    // goes first: while it lives, it owns the folder.)
    drop((source, tier));
    let whole = FaultProxy::start(&upstream(&server), |_, _, _| Fault::Pass).await;
    let tier = DiskTier::open(
        folder.path(),
        64 << 20,
        Arc::new(proxied(&server, &whole, "bucket", 1)),
    )
    .unwrap();
    let source = ChunkSource::new(Arc::new(tier.clone()), DigestAlgorithm::Sha256);
    for _ in 0..3 {
        assert_eq!(source.read(&digest, data.len()).await.unwrap(), data);
    }
    assert_eq!(whole.count("GET", &tier_key(&digest)), 1);
    assert_eq!(tier.stats().hits, 2);
}

fn tier_key(digest: &Digest) -> String {
    let hex = to_hex(digest);
    format!("ds/.chunks/{}/{hex}", &hex[..4])
}
