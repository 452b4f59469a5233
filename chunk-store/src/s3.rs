//! Chunks in S3-compatible object storage, through `object_store` (feature `s3`).
//!
//! Two layouts under a prefix of a bucket: PBS 4's (`<prefix>/.chunks/XXXX/<digest>`, the
//! object a DataBlob, as PBS 4's S3 datastores keep them) and casync's
//! (`<prefix>/XXXX/<digest>.cacnk`). Puts are create-only, so two writers of one chunk never
//! overwrite each other and a chunk already there counts as a duplicate.

use std::sync::Arc;
use std::time::Duration;

use object_store::ClientOptions;
use object_store::aws::AmazonS3Builder;

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::object::{
    ObjectChunks, ObjectLayout, install_crypto_provider, object_chunk_store, retry_config,
};

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
    bucket: String,
    layout: ObjectLayout,
    chunks: Arc<ObjectChunks>,
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
            .with_retry(retry_config(options.retries))
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(options.allow_http || allow_http_from_env())
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
        let base = format!("s3://{bucket}");
        Ok(Self {
            bucket: bucket.to_owned(),
            layout,
            chunks: Arc::new(ObjectChunks::new(
                name,
                base,
                &prefix,
                Some(layout),
                Arc::new(client),
                options.max_in_flight,
                None,
            )),
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
        self.chunks.chunk_key(self.layout, digest)
    }

    /// Writes `bytes` to the object at `relative` (below the prefix), replacing it.
    ///
    /// # Errors
    /// [`StoreError::Denied`] or [`StoreError::Unavailable`] naming the bucket and key.
    pub async fn write_object(&self, relative: &str, bytes: Vec<u8>) -> Result<()> {
        self.chunks.write_object(relative, bytes).await
    }
}

/// Whether `AWS_ALLOW_HTTP` allows plain http (the client's own options replace the variables'
/// client settings, so it is read here).
fn allow_http_from_env() -> bool {
    std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// `(bucket, prefix)` of `s3://BUCKET[/PREFIX]`.
fn parse_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, prefix))
}

object_chunk_store!(S3Store);

#[cfg(test)]
mod tests {
    use super::*;

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
