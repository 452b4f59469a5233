//! STORE arguments: `pbs:PATH`, `castr:PATH`, a PATH whose layout says which,
//! `s3://BUCKET/PREFIX` with its layout and service options, or a read-only `http(s)://` URL;
//! several of them read as a chain, and a disk cache in front.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_chunk_store::{
    CastrStore, ChunkSource, ChunkStore, CryptKey, DigestAlgorithm, DiskTier, HttpOptions,
    HttpStore, ObjectLayout, PbsDatastore, S3Options, S3Store, StoreChain, StoreError, SyncLevel,
};

use cairn_index::{Index, IndexBytes, MAX_INDEX_SIZE, OpenOptions, Origin};

use crate::Failure;
use crate::backup::parse_size;
use crate::interrupt::{Stop, unless_stopped};

/// A store named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreSpec {
    /// A PBS datastore.
    Pbs(PathBuf),
    /// A casync store.
    Castr(PathBuf),
    /// A path whose kind is decided by what is there (or, for a new store, by the index format).
    Detect(PathBuf),
    /// A bucket (and prefix) of an S3-compatible service: `s3://BUCKET[/PREFIX]`.
    S3(String),
    /// A read-only store under a web server: `http(s)://HOST/PATH`.
    Http(String),
}

/// The layout of chunks in an object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LayoutArg {
    /// PBS 4's S3 datastores: PREFIX/.chunks/XXXX/DIGEST, DataBlobs.
    Pbs,
    /// casync stores: PREFIX/XXXX/DIGEST.cacnk.
    Castr,
}

trait FromArg {
    fn from_arg(arg: LayoutArg) -> Self;
}

impl FromArg for ObjectLayout {
    fn from_arg(arg: LayoutArg) -> Self {
        match arg {
            LayoutArg::Pbs => Self::Pbs,
            LayoutArg::Castr => Self::Castr,
        }
    }
}

/// The `--store` arguments, the options of remote stores and the disk cache, the same on every
/// command.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreArgs {
    /// The store: pbs:PATH, castr:PATH, a PATH, s3://BUCKET/PREFIX (credentials and region
    /// from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION) or http(s)://HOST/PATH
    /// (read-only). Given more than once, chunks are read from the first store that has them
    /// and written to the first.
    #[arg(long = "store", value_name = "STORE", required = true, value_parser = StoreSpec::parse)]
    stores: Vec<StoreSpec>,
    /// How chunks are laid out in an s3:// store (default pbs) or an http(s):// one (default:
    /// found from the first chunk).
    #[arg(long, value_enum)]
    layout: Option<LayoutArg>,
    /// The S3 service's URL, such as http://127.0.0.1:9000 (else AWS_ENDPOINT_URL, else AWS).
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// Allow a plain http:// S3 endpoint (else AWS_ALLOW_HTTP).
    #[arg(long)]
    s3_allow_http: bool,
    /// Address buckets as BUCKET.ENDPOINT (virtual-hosted style) instead of ENDPOINT/BUCKET.
    #[arg(long)]
    s3_virtual_hosted: bool,
    /// Keep chunks read from the stores in this local folder and read them from there next
    /// time. It must be new, empty, or a disk cache cairn made (never a datastore or store:
    /// the cache deletes chunks to stay within its size). While one cairn fills it, others
    /// read from it without filling it.
    #[arg(long, value_name = "DIR")]
    disk_cache: Option<PathBuf>,
    /// The most the disk cache holds; least recently used chunks are deleted to stay within it.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "4GiB")]
    disk_cache_size: u64,
    /// The PBS encryption key of the backup (a key file of `proxmox-backup-client key create`
    /// or `cairn key create`); its passphrase comes from PBS_ENCRYPTION_PASSWORD, else the
    /// terminal.
    #[arg(long, value_name = "FILE")]
    keyfile: Option<PathBuf>,
    /// The key, once opened.
    #[arg(skip)]
    key: std::sync::OnceLock<Arc<CryptKey>>,
}

impl StoreArgs {
    /// Opens the `--keyfile` key (and asks its passphrase) off the command's thread, so that a
    /// signal ends a prompt or a key file that never arrives (a FIFO); [`key`](Self::key)
    /// gives it after.
    pub(crate) async fn load_key(&self, stop: &Stop) -> Result<(), Failure> {
        let Some(path) = self.keyfile.clone() else {
            return Ok(());
        };
        if self.key.get().is_some() {
            return Ok(());
        }
        let key = unless_stopped(stop, "no key was opened; nothing was written", move || {
            crate::key::load_key(&path)
        })
        .await?;
        let _ = self.key.set(key);
        Ok(())
    }

    /// The `--keyfile` key, opened (and its passphrase asked) once.
    pub(crate) fn key(&self) -> Result<Option<Arc<CryptKey>>, Failure> {
        let Some(path) = &self.keyfile else {
            return Ok(None);
        };
        if let Some(key) = self.key.get() {
            return Ok(Some(Arc::clone(key)));
        }
        let key = crate::key::load_key(path)?;
        Ok(Some(Arc::clone(self.key.get_or_init(|| key))))
    }

    /// Verified chunks of `store` for an index whose digests use `algorithm`, decrypted and
    /// with the key's digests when there is a `--keyfile`.
    pub(crate) fn source(
        &self,
        store: Arc<dyn ChunkStore>,
        algorithm: DigestAlgorithm,
    ) -> Result<ChunkSource, Failure> {
        let source = ChunkSource::new(store, algorithm);
        Ok(match self.key()? {
            Some(key) => source.with_key(key),
            None => source,
        })
    }

    /// Opens the stores for reading.
    pub(crate) fn open(&self) -> Result<Arc<dyn ChunkStore>, Failure> {
        let stores = self
            .stores
            .iter()
            .map(|spec| self.open_one(spec))
            .collect::<Result<Vec<_>, _>>()?;
        self.compose(stores)
    }

    /// Opens the stores for a backup: the first, which receives the chunks, is created if
    /// needed (see [`StoreSpec::create`]).
    pub(crate) fn create(
        &self,
        new_is_pbs: bool,
        sync: SyncLevel,
    ) -> Result<Arc<dyn ChunkStore>, Failure> {
        let mut stores = vec![self.create_one(&self.stores[0], new_is_pbs, sync)?];
        for spec in &self.stores[1..] {
            stores.push(self.open_one(spec)?);
        }
        self.compose(stores)
    }

    /// One store for the chain, or the chain; behind the disk cache if there is one.
    fn compose(
        &self,
        mut stores: Vec<Arc<dyn ChunkStore>>,
    ) -> Result<Arc<dyn ChunkStore>, Failure> {
        let store: Arc<dyn ChunkStore> = if stores.len() == 1 {
            stores.remove(0)
        } else {
            let chain = StoreChain::new(stores).map_err(Failure::error)?;
            Arc::new(chain.with_report(|error| {
                eprintln!("cairn: warning: {error}; reading it from the next store");
            }))
        };
        match &self.disk_cache {
            Some(folder) => {
                let tier = DiskTier::open(folder, self.disk_cache_size, store).map_err(|e| {
                    // Another folder is needed: the user's to give.
                    if matches!(e, StoreError::ForeignFolder { .. }) {
                        Failure::usage(crate::chain(&e))
                    } else {
                        Failure::error(e)
                    }
                })?;
                if tier.is_shared() {
                    eprintln!(
                        "cairn: warning: another cairn is using the disk cache {}: reading the \
                         chunks it holds, keeping no new ones",
                        folder.display()
                    );
                }
                Ok(Arc::new(tier))
            }
            None => Ok(store),
        }
    }

    fn open_one(&self, spec: &StoreSpec) -> Result<Arc<dyn ChunkStore>, Failure> {
        match spec {
            StoreSpec::S3(url) => self.s3(url),
            StoreSpec::Http(url) => {
                let mut options = HttpOptions::default();
                options.layout = self.layout.map(ObjectLayout::from_arg);
                let store = HttpStore::new(url, &options).map_err(Failure::error)?;
                Ok(Arc::new(store))
            }
            local => local.open(),
        }
    }

    fn create_one(
        &self,
        spec: &StoreSpec,
        new_is_pbs: bool,
        sync: SyncLevel,
    ) -> Result<Arc<dyn ChunkStore>, Failure> {
        match spec {
            StoreSpec::S3(url) => self.s3(url),
            StoreSpec::Http(url) => Err(Failure::usage(format!(
                "{url}: stores over HTTP are read-only; back up to a local or s3:// store"
            ))),
            local => local.create(new_is_pbs, sync),
        }
    }

    fn s3_options(&self) -> S3Options {
        let mut options = S3Options::default();
        options.endpoint.clone_from(&self.s3_endpoint);
        options.allow_http = self.s3_allow_http;
        options.path_style = !self.s3_virtual_hosted;
        options
    }

    fn s3(&self, url: &str) -> Result<Arc<dyn ChunkStore>, Failure> {
        let layout = self
            .layout
            .map_or(ObjectLayout::Pbs, ObjectLayout::from_arg);
        let store = S3Store::from_url(url, layout, &self.s3_options()).map_err(Failure::error)?;
        Ok(Arc::new(store))
    }

    /// Opens an index: a file, or an `s3://BUCKET/KEY` or `http(s)://…` URL (with this
    /// command's S3 options), so a PBS 4 snapshot restores straight from its bucket. Either is
    /// checked as it arrives ([`IndexBytes`]): something that is no index is refused from its
    /// first bytes, and nothing over what its header allows (or over
    /// [`MAX_INDEX_SIZE`]) is read.
    pub(crate) async fn open_index(&self, path: &Path, stop: &Stop) -> Result<Index, Failure> {
        let text = path.to_string_lossy();
        let body = if let Some(rest) = text.strip_prefix("s3://") {
            let Some((bucket, key)) = rest
                .split_once('/')
                .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            else {
                return Err(Failure::usage(format!(
                    "{text}: an index in S3 is s3://BUCKET/KEY"
                )));
            };
            let bucket = S3Store::new(bucket, "", ObjectLayout::Pbs, &self.s3_options())
                .map_err(Failure::error)?;
            bucket
                .open_object(key, MAX_INDEX_SIZE, "an index")
                .await
                .map_err(Failure::error)?
        } else if text.starts_with("http://") || text.starts_with("https://") {
            let Some((base, name)) = text.rsplit_once('/').filter(|(_, n)| !n.is_empty()) else {
                return Err(Failure::usage(format!(
                    "{text}: not the URL of an index file"
                )));
            };
            let server = HttpStore::new(base, &HttpOptions::default()).map_err(Failure::error)?;
            server
                .open_object(name, MAX_INDEX_SIZE, "an index")
                .await
                .map_err(Failure::error)?
        } else {
            // A FIFO or a pipe (`/dev/stdin`) may wait for ever for its writer.
            let path = path.to_path_buf();
            return unless_stopped(stop, "nothing was written", move || {
                Index::open(&path).map_err(Failure::error)
            })
            .await;
        };
        let mut body = body.ok_or_else(|| Failure::data(format!("{text}: no such index")))?;
        let mut bytes = IndexBytes::new(Origin::file(path));
        bytes
            .expect_len(body.declared_len())
            .map_err(Failure::error)?;
        while let Some(piece) = body.next().await.map_err(Failure::error)? {
            bytes.push(&piece).map_err(Failure::error)?;
        }
        bytes
            .finish(&OpenOptions::default())
            .map_err(Failure::error)
    }
}

impl StoreSpec {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("s3://") {
            if rest.split('/').next().is_none_or(str::is_empty) {
                return Err("an S3 store is s3://BUCKET or s3://BUCKET/PREFIX".to_owned());
            }
            return Ok(Self::S3(text.to_owned()));
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            return Ok(Self::Http(text.to_owned()));
        }
        let (kind, path) = match text.split_once(':') {
            Some(("pbs", path)) => (Some(true), path),
            Some(("castr", path)) => (Some(false), path),
            Some((scheme, _)) if scheme.len() > 1 && !scheme.contains('/') => {
                return Err(format!(
                    "unknown store kind `{scheme}:` (use pbs:PATH, castr:PATH or a plain path)"
                ));
            }
            _ => (None, text),
        };
        if path.is_empty() {
            return Err("the store path is empty".to_owned());
        }
        let path = PathBuf::from(path);
        Ok(match kind {
            Some(true) => Self::Pbs(path),
            Some(false) => Self::Castr(path),
            None => Self::Detect(path),
        })
    }

    fn path(&self) -> &Path {
        match self {
            Self::Pbs(p) | Self::Castr(p) | Self::Detect(p) => p,
            Self::S3(url) | Self::Http(url) => Path::new(url),
        }
    }

    /// Whether this is (or would become) a PBS datastore; `new_is_pbs` decides for a path
    /// that does not exist yet.
    fn is_pbs(&self, new_is_pbs: bool) -> bool {
        match self {
            Self::Pbs(_) | Self::S3(_) | Self::Http(_) => true,
            Self::Castr(_) => false,
            Self::Detect(path) => {
                if path.join(".chunks").is_dir() {
                    true
                } else if path.is_dir() {
                    false
                } else {
                    new_is_pbs
                }
            }
        }
    }

    /// Opens an existing store.
    pub(crate) fn open(&self) -> Result<Arc<dyn ChunkStore>, Failure> {
        if !self.path().exists() {
            return Err(Failure::data(format!(
                "{}: no such store",
                self.path().display()
            )));
        }
        let store: Arc<dyn ChunkStore> = if self.is_pbs(true) {
            Arc::new(PbsDatastore::open(self.path()).map_err(Failure::error)?)
        } else {
            Arc::new(CastrStore::open(self.path()).map_err(Failure::error)?)
        };
        Ok(store)
    }

    /// Opens the store for writing at `sync`, creating it if needed: a new plain path becomes
    /// a PBS datastore if `new_is_pbs`, else a casync store.
    pub(crate) fn create(
        &self,
        new_is_pbs: bool,
        sync: SyncLevel,
    ) -> Result<Arc<dyn ChunkStore>, Failure> {
        let store: Arc<dyn ChunkStore> = if self.is_pbs(new_is_pbs) {
            Arc::new(
                PbsDatastore::create(self.path())
                    .map_err(Failure::error)?
                    .with_sync(sync),
            )
        } else {
            Arc::new(
                CastrStore::create(self.path())
                    .map_err(Failure::error)?
                    .with_sync(sync),
            )
        };
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(
            StoreSpec::parse("pbs:/a").unwrap(),
            StoreSpec::Pbs("/a".into())
        );
        assert_eq!(
            StoreSpec::parse("castr:x").unwrap(),
            StoreSpec::Castr("x".into())
        );
        assert_eq!(
            StoreSpec::parse("/srv/ds").unwrap(),
            StoreSpec::Detect("/srv/ds".into())
        );
        assert_eq!(
            StoreSpec::parse("s3x:bucket"),
            Err("unknown store kind `s3x:` (use pbs:PATH, castr:PATH or a plain path)".to_owned())
        );
        assert_eq!(
            StoreSpec::parse("s3://bucket/ds"),
            Ok(StoreSpec::S3("s3://bucket/ds".to_owned()))
        );
        assert_eq!(
            StoreSpec::parse("s3:///ds"),
            Err("an S3 store is s3://BUCKET or s3://BUCKET/PREFIX".to_owned())
        );
        assert_eq!(
            StoreSpec::parse("pbs:"),
            Err("the store path is empty".to_owned())
        );
        assert_eq!(
            StoreSpec::parse(""),
            Err("the store path is empty".to_owned())
        );
    }
}
