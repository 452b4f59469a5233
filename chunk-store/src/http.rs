//! Chunks under any web server, read-only, through `object_store` (feature `http`): a casync or
//! desync store published over HTTP(S) (`casync make --store=…` copied to a web root, desync's
//! `chunk-server`), or a PBS datastore's folder.

use std::sync::Arc;
use std::time::Duration;

use object_store::ClientOptions;
use object_store::http::HttpBuilder;

use crate::error::{Result, StoreError};
use crate::object::{
    ObjectChunks, ObjectLayout, install_crypto_provider, object_chunk_store, retry_config,
};

/// How to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpOptions {
    /// The layout; `None` finds it from the first chunk fetched (PBS's `.chunks/XXXX/…`,
    /// else casync's `XXXX/….cacnk`).
    pub layout: Option<ObjectLayout>,
    /// Requests in flight at once. Default 32.
    pub max_in_flight: usize,
    /// Retries of a request that failed with a server error or timed out (never of a 404 or
    /// a 403). Default 8.
    pub retries: usize,
    /// Time allowed for one attempt. Default 60 s.
    pub timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            layout: None,
            max_in_flight: 32,
            retries: 8,
            timeout: Duration::from_secs(60),
        }
    }
}

/// A read-only chunk store under an `http://` or `https://` URL.
#[derive(Debug, Clone)]
pub struct HttpStore {
    chunks: Arc<ObjectChunks>,
}

impl HttpStore {
    /// The store under `url`.
    ///
    /// # Errors
    /// [`StoreError::Store`] for a URL the client cannot use.
    pub fn new(url: &str, options: &HttpOptions) -> Result<Self> {
        install_crypto_provider();
        let base = url.trim_end_matches('/').to_owned();
        let name: Arc<str> = base.as_str().into();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(StoreError::store(
                &name,
                "not an http:// or https:// URL",
                None,
            ));
        }
        let client = HttpBuilder::new()
            .with_url(base.as_str())
            .with_retry(retry_config(options.retries))
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout(options.timeout)
                    .with_connect_timeout(Duration::from_secs(10)),
            )
            .build()
            .map_err(|e| {
                StoreError::store(
                    &name,
                    "cannot configure the HTTP client",
                    Some(std::io::Error::other(e.to_string())),
                )
            })?;
        Ok(Self {
            chunks: Arc::new(ObjectChunks::new(
                name,
                base,
                "",
                options.layout,
                Arc::new(client),
                options.max_in_flight,
                Some("is read-only: stores over HTTP are for reading"),
            )),
        })
    }

    /// The layout: given, or found by the first chunk fetched.
    #[must_use]
    pub fn layout(&self) -> Option<ObjectLayout> {
        self.chunks.layout()
    }
}

object_chunk_store!(HttpStore);
