//! STORE arguments: `pbs:PATH`, `castr:PATH`, or a PATH whose layout says which.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_chunk_store::{CastrStore, ChunkStore, PbsDatastore, SyncLevel};

use crate::Failure;

/// A store named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreSpec {
    /// A PBS datastore.
    Pbs(PathBuf),
    /// A casync store.
    Castr(PathBuf),
    /// A path whose kind is decided by what is there (or, for a new store, by the index format).
    Detect(PathBuf),
}

impl StoreSpec {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
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
        }
    }

    /// Whether this is (or would become) a PBS datastore; `new_is_pbs` decides for a path
    /// that does not exist yet.
    fn is_pbs(&self, new_is_pbs: bool) -> bool {
        match self {
            Self::Pbs(_) => true,
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
            StoreSpec::parse("pbs:"),
            Err("the store path is empty".to_owned())
        );
        assert_eq!(
            StoreSpec::parse(""),
            Err("the store path is empty".to_owned())
        );
    }
}
