//! Chunks in S3-compatible object storage, through `object_store` (feature `s3`).
//!
//! Two layouts under a prefix of a bucket: PBS 4's (`<prefix>/.chunks/XXXX/<digest>`, the
//! object a DataBlob, as PBS 4's S3 datastores keep them) and casync's
//! (`<prefix>/XXXX/<digest>.cacnk`). Puts are create-only, so two writers of one chunk never
//! overwrite each other and a chunk already there counts as a duplicate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore as _, ObjectStoreExt as _, PutMode, PutOptions,
    PutPayload, RetryConfig,
};
use tokio::sync::Semaphore;

use crate::digest::{Digest, Hex, to_hex};
use crate::error::{Location, Result, StoreError};
use crate::store::{ChunkEncoding, ChunkStore, EncodedChunk, PutOutcome};

/// Where chunks live under a store's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ObjectLayout {
    /// PBS 4's S3 datastore: `.chunks/XXXX/<64 hex>`, the object a DataBlob.
    #[default]
    Pbs,
    /// A casync store: `XXXX/<64 hex>.cacnk`, the object a compressed casync chunk.
    Castr,
}

impl ObjectLayout {
    /// The key of `digest` below the store's prefix.
    #[must_use]
    pub fn key(self, digest: &Digest) -> String {
        let hex = to_hex(digest);
        match self {
            Self::Pbs => format!(".chunks/{}/{hex}", &hex[..4]),
            Self::Castr => format!("{}/{hex}.cacnk", &hex[..4]),
        }
    }

    /// How chunks are encoded in this layout.
    #[must_use]
    pub fn encoding(self) -> ChunkEncoding {
        match self {
            Self::Pbs => ChunkEncoding::PbsBlob,
            Self::Castr => ChunkEncoding::CasyncCompressed,
        }
    }

    /// `pbs` or `castr`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Pbs => "pbs",
            Self::Castr => "castr",
        }
    }
}

/// How to reach the service. Unset fields come from the standard AWS variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct S3Options {
    /// The service's URL (`http://127.0.0.1:9000` for MinIO, say); AWS's by default.
    pub endpoint: Option<String>,
    /// The region (`us-east-1` if neither this nor `AWS_REGION` says).
    pub region: Option<String>,
    /// Allow plain `http://` endpoints (off by default: credentials travel in every request).
    pub allow_http: bool,
    /// Address buckets as `ENDPOINT/BUCKET/KEY` rather than `BUCKET.ENDPOINT/KEY`: what most
    /// self-hosted services (MinIO, Ceph RGW, Garage) need. On by default.
    pub path_style: bool,
    /// Access key id (else `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret access key (else `AWS_SECRET_ACCESS_KEY`). Never printed, not even by `Debug`.
    pub secret_access_key: Option<String>,
    /// Requests in flight at once. Default 32.
    pub max_in_flight: usize,
    /// Retries of a request that was throttled, failed with a server error or timed out
    /// (never of one that was not found or denied). Default 8.
    pub retries: usize,
    /// Time allowed for one attempt. Default 60 s.
    pub timeout: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            allow_http: false,
            path_style: true,
            access_key_id: None,
            secret_access_key: None,
            max_in_flight: 32,
            retries: 8,
            timeout: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "(hidden)"),
            )
            .field("max_in_flight", &self.max_in_flight)
            .field("retries", &self.retries)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A chunk store in a bucket of an S3-compatible service.
#[derive(Debug, Clone)]
pub struct S3Store {
    name: Arc<str>,
    bucket: String,
    prefix: String,
    layout: ObjectLayout,
    client: Arc<AmazonS3>,
    in_flight: Arc<Semaphore>,
    /// Puts under way, by digest: a second put of one chunk waits for the first, so that
    /// within a process exactly one inserts it even where the service's create-only put is
    /// not atomic (across processes, the service's conditional put decides).
    puts: Arc<Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>>,
}

/// rustls needs one process-wide crypto provider; cairn's is ring (no C toolchain beyond
/// ring's own build).
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl S3Store {
    /// The store under `prefix` (may be empty) of `bucket`, in `layout`.
    ///
    /// # Errors
    /// [`StoreError::Store`] if the options do not make a client (a malformed endpoint, say).
    pub fn new(
        bucket: &str,
        prefix: &str,
        layout: ObjectLayout,
        options: &S3Options,
    ) -> Result<Self> {
        install_crypto_provider();
        let prefix = prefix.trim_matches('/').to_owned();
        let name: Arc<str> = if prefix.is_empty() {
            format!("s3://{bucket}").into()
        } else {
            format!("s3://{bucket}/{prefix}").into()
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(!options.path_style)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(15),
                    base: 2.0,
                },
                max_retries: options.retries,
                retry_timeout: Duration::from_secs(180),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(options.allow_http)
                    .with_timeout(options.timeout)
                    .with_connect_timeout(Duration::from_secs(10)),
            );
        if std::env::var_os("AWS_REGION").is_none() && options.region.is_none() {
            builder = builder.with_region("us-east-1");
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(key) = &options.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &options.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let client = builder.build().map_err(|e| {
            StoreError::store(
                &name,
                "cannot configure the S3 client",
                Some(std::io::Error::other(e.to_string())),
            )
        })?;
        Ok(Self {
            name,
            bucket: bucket.to_owned(),
            prefix,
            layout,
            client: Arc::new(client),
            in_flight: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            puts: Arc::default(),
        })
    }

    /// The store an `s3://BUCKET/PREFIX` URL names.
    ///
    /// # Errors
    /// [`StoreError::Store`] for a URL that is not `s3://BUCKET[/PREFIX]`, or as for
    /// [`new`](S3Store::new).
    pub fn from_url(url: &str, layout: ObjectLayout, options: &S3Options) -> Result<Self> {
        let (bucket, prefix) = parse_url(url).ok_or_else(|| {
            StoreError::store(
                &Arc::from(url),
                "not an S3 URL (s3://BUCKET or s3://BUCKET/PREFIX)",
                None,
            )
        })?;
        Self::new(bucket, prefix, layout, options)
    }

    /// The bucket.
    #[must_use]
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The layout.
    #[must_use]
    pub fn layout(&self) -> ObjectLayout {
        self.layout
    }

    /// The object key of `digest` (with the prefix).
    #[must_use]
    pub fn chunk_key(&self, digest: &Digest) -> String {
        self.key(&self.layout.key(digest))
    }

    fn key(&self, relative: &str) -> String {
        if self.prefix.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.prefix)
        }
    }

    fn location(&self, key: &str) -> Location {
        Location::Key(format!("s3://{}/{key}", self.bucket))
    }

    /// The error for `error` on `key`.
    fn error(&self, digest: Option<&Digest>, key: &str, error: object_store::Error) -> StoreError {
        let location = self.location(key);
        let store = Arc::clone(&self.name);
        match error {
            object_store::Error::NotFound { .. } => match digest {
                Some(digest) => StoreError::missing(&store, digest, location),
                None => StoreError::Unavailable {
                    store,
                    digest: None,
                    location,
                    source: Box::new(error),
                },
            },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => StoreError::Denied {
                store,
                digest: digest.map(|d| Hex(*d)),
                location,
                source: Box::new(error),
            },
            other => StoreError::Unavailable {
                store,
                digest: digest.map(|d| Hex(*d)),
                location,
                source: Box::new(other),
            },
        }
    }

    /// Reads the object at `key` (below the prefix): its bytes, or `None` if there is none.
    ///
    /// # Errors
    /// [`StoreError::Denied`] or [`StoreError::Unavailable`] naming the bucket and key.
    pub async fn read_object(&self, relative: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(relative);
        let _permit = self.in_flight.acquire().await.ok();
        let path = ObjectPath::from(key.as_str());
        let result = match self.client.get(&path).await {
            Ok(result) => result.bytes().await,
            Err(error) => Err(error),
        };
        match result {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(self.error(None, &key, error)),
        }
    }

    /// Writes `bytes` to the object at `relative` (below the prefix), replacing it.
    ///
    /// # Errors
    /// [`StoreError::Denied`] or [`StoreError::Unavailable`] naming the bucket and key.
    pub async fn write_object(&self, relative: &str, bytes: Vec<u8>) -> Result<()> {
        let key = self.key(relative);
        let _permit = self.in_flight.acquire().await.ok();
        self.client
            .put(&ObjectPath::from(key.as_str()), PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(|e| self.error(None, &key, e))
    }

    async fn exists(&self, digest: &Digest) -> Result<bool> {
        let key = self.chunk_key(digest);
        let _permit = self.in_flight.acquire().await.ok();
        match self.client.head(&ObjectPath::from(key.as_str())).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(self.error(Some(digest), &key, error)),
        }
    }
}

/// `(bucket, prefix)` of `s3://BUCKET[/PREFIX]`.
fn parse_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, prefix))
}

#[async_trait::async_trait]
impl ChunkStore for S3Store {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn encoding(&self) -> ChunkEncoding {
        self.layout.encoding()
    }

    async fn get(&self, digest: &Digest) -> Result<EncodedChunk> {
        let key = self.chunk_key(digest);
        let _permit = self.in_flight.acquire().await.ok();
        let path = ObjectPath::from(key.as_str());
        let result = match self.client.get(&path).await {
            Ok(result) => result.bytes().await,
            Err(error) => Err(error),
        };
        match result {
            Ok(bytes) => Ok(EncodedChunk {
                encoding: self.layout.encoding(),
                bytes: bytes.to_vec(),
                location: self.location(&key),
            }),
            Err(error) => Err(self.error(Some(digest), &key, error)),
        }
    }

    async fn put(&self, digest: &Digest, encoded: Vec<u8>) -> Result<PutOutcome> {
        let turn = Arc::clone(
            self.puts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(*digest)
                .or_default(),
        );
        let outcome = {
            let _turn = turn.lock().await;
            self.create(digest, encoded).await
        };
        let mut puts = self.puts.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's handle and this one: nobody else waits, the entry can go.
        if Arc::strong_count(&turn) == 2 {
            puts.remove(digest);
        }
        outcome
    }

    async fn contains(&self, digest: &Digest) -> Result<bool> {
        self.exists(digest).await
    }

    /// Objects have no access time to set; PBS 4 keeps its garbage collection's marks outside
    /// the bucket. Presence only.
    async fn touch(&self, digest: &Digest) -> Result<bool> {
        self.exists(digest).await
    }

    /// Nothing to do: a put is durable once the service has acknowledged it.
    async fn sync(&self) -> Result<()> {
        Ok(())
    }
}

impl S3Store {
    /// One create-only put.
    async fn create(&self, digest: &Digest, encoded: Vec<u8>) -> Result<PutOutcome> {
        let key = self.chunk_key(digest);
        let _permit = self.in_flight.acquire().await.ok();
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let put = self
            .client
            .put_opts(
                &ObjectPath::from(key.as_str()),
                PutPayload::from(encoded),
                options,
            )
            .await;
        match put {
            Ok(_) => Ok(PutOutcome::Inserted),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(PutOutcome::AlreadyPresent),
            Err(error) => Err(self.error(Some(digest), &key, error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_put_chunks_where_pbs_and_casync_do() {
        let digest: Digest = std::array::from_fn(|i| i as u8);
        let hex = to_hex(&digest);
        assert_eq!(
            ObjectLayout::Pbs.key(&digest),
            format!(".chunks/0001/{hex}")
        );
        assert_eq!(
            ObjectLayout::Castr.key(&digest),
            format!("0001/{hex}.cacnk")
        );
    }

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        assert_eq!(parse_url("s3://b"), Some(("b", "")));
        assert_eq!(parse_url("s3://b/store/x"), Some(("b", "store/x")));
        assert_eq!(parse_url("s3:///x"), None);
        assert_eq!(parse_url("http://b/x"), None);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let options = S3Options {
            secret_access_key: Some("very-secret".to_owned()),
            ..S3Options::default()
        };
        assert!(!format!("{options:?}").contains("very-secret"));
    }
}
