//! cairn's own HTTP chunk server (`serve::serve_http`) under cairn's HTTP store: the read-only
//! conformance suite in both layouts, whichever encoding the served store keeps.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve_http(
        listener,
        backing,
        ServeOptions::default(),
        std::future::pending(),
    ));
    url
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
