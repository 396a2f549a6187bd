//! The object store archived files move to when `[storage] archive_url` is set: S3 or any
//! S3-compatible server (`s3://bucket/prefix`), or the local backend of the same crate
//! (`file:///path`), through the `object_store` crate.
//!
//! Files are still written, fsynced and verified in the local archive directory first; only a
//! verified file is uploaded, its size checked against the store's, and only then does the
//! manifest say it is remote and the local copy go (see `PartitionArchive::offload`).
//!
//! The archive runs on plain threads (retention, `archive run`, replay reads inside the
//! server's handlers), while `object_store` is async: each call runs on this store's own
//! small runtime and the calling thread waits for it. Waiting on a channel rather than with
//! `block_on` works from any thread, including one the server's runtime owns.

use std::future::Future;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

/// Bytes of a file read and uploaded at a time (S3 multipart parts beyond the first).
const UPLOAD_CHUNK_BYTES: usize = 8 << 20;
/// Threads of the store's own runtime: requests are few and the archive waits for each.
const RUNTIME_THREADS: usize = 1;

/// Why the object store could not be used; each names the store or the object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `[storage] archive_url` names no store this engine can open.
    #[error(
        "{url}: {source}; set [storage] archive_url to s3://bucket/prefix or file:///absolute/path"
    )]
    Open {
        url: String,
        #[source]
        source: OpenError,
    },
    /// A request to the store failed.
    #[error("{location}: {source}")]
    Request {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{location}: the object store runtime stopped")]
    Stopped { location: String },
    /// The store holds another size than the file uploaded.
    #[error("{location}: the store holds {stored} bytes after uploading {uploaded}")]
    Size {
        location: String,
        stored: u64,
        uploaded: u64,
    },
    /// The local file to upload could not be read.
    #[error("{path}: {source}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    Url(#[from] url::ParseError),
    #[error("unsupported scheme `{0}`")]
    Scheme(String),
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Prefix(#[from] object_store::path::Error),
    /// The store's runtime could not start.
    #[error(transparent)]
    Runtime(#[from] std::io::Error),
}

/// A partition's place in the object store, `<topic>/<partition>`: its objects are
/// `<topic>/<partition>/<file>`.
#[derive(Clone)]
pub struct RemoteDir {
    store: Arc<RemoteStore>,
    prefix: String,
}

impl RemoteDir {
    pub fn new(store: Arc<RemoteStore>, topic: &str, partition: u32) -> RemoteDir {
        RemoteDir {
            store,
            prefix: format!("{topic}/{partition}"),
        }
    }

    /// The folder `prefix` (like `<topic>/metadata`) of the store.
    pub fn folder(store: Arc<RemoteStore>, prefix: &str) -> RemoteDir {
        RemoteDir {
            store,
            prefix: prefix.to_string(),
        }
    }

    /// The folder's URL (its files are `<url>/<file>`).
    pub fn url(&self) -> String {
        self.store.describe(&self.prefix)
    }

    fn key(&self, file: &str) -> String {
        format!("{}/{file}", self.prefix)
    }

    /// Where `file` lives in the store, for messages.
    pub fn describe(&self, file: &str) -> String {
        self.store.describe(&self.key(file))
    }

    /// Uploads the local file at `path` as `file`, checking the stored size.
    pub fn upload(&self, file: &str, path: &FsPath) -> Result<u64, StoreError> {
        self.store.upload(&self.key(file), path)
    }

    /// Uploads `bytes` as `file`.
    pub fn put(&self, file: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.store.put(&self.key(file), bytes)
    }

    /// The object `file`; None if there is none.
    pub fn get(&self, file: &str) -> Result<Option<Bytes>, StoreError> {
        self.store.get(&self.key(file))
    }

    /// Deletes every object of the folder.
    pub fn delete_all(&self) -> Result<(), StoreError> {
        self.store.delete_all(&self.prefix)
    }

    /// Deletes every object under `sub` in the folder.
    pub fn delete_under(&self, sub: &str) -> Result<(), StoreError> {
        self.store.delete_all(&self.key(sub))
    }
}

pub struct RemoteStore {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// Taken on drop: a runtime must not be dropped (blocking) inside another one.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for RemoteStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl RemoteStore {
    /// Connects to the store at `url`. For `s3://` the credentials, region and endpoint come
    /// from the usual variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ENDPOINT for an S3-compatible server, AWS_ALLOW_HTTP=true for one without TLS).
    pub fn open(url: &str) -> Result<RemoteStore, StoreError> {
        let invalid = |source: OpenError| StoreError::Open {
            url: url.to_string(),
            source,
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(e.into()))?;
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match parsed.scheme() {
            "s3" | "s3a" => {
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| invalid(e.into()))?;
                let prefix = Path::parse(parsed.path()).map_err(|e| invalid(e.into()))?;
                (Arc::new(store), prefix)
            }
            "file" => {
                let (store, prefix) =
                    object_store::parse_url(&parsed).map_err(|e| invalid(e.into()))?;
                (Arc::from(store), prefix)
            }
            other => return Err(invalid(OpenError::Scheme(other.to_string()))),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("sluice-archive-store")
            .enable_all()
            .build()
            .map_err(|e| invalid(e.into()))?;
        Ok(RemoteStore {
            url: url.trim_end_matches('/').to_string(),
            store,
            prefix,
            runtime: Some(runtime),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where `key` (`<topic>/<partition>/<file>`) lives, for messages.
    pub fn describe(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    fn location(&self, key: &str) -> Path {
        self.prefix.parts().chain(Path::from(key).parts()).collect()
    }

    /// Runs `work` on the store's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        key: &str,
        work: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        self.runtime
            .as_ref()
            .expect("runtime present until drop")
            .spawn(async move {
                let _ = done.send(work.await);
            });
        result
            .recv()
            .map_err(|_| StoreError::Stopped {
                location: self.describe(key),
            })?
            .map_err(|source| StoreError::Request {
                location: self.describe(key),
                source,
            })
    }

    /// Uploads the file at `path` as `key` (in parts, so a file of any size streams) and
    /// checks the stored size; returns it.
    fn upload(&self, key: &str, path: &FsPath) -> Result<u64, StoreError> {
        let size = std::fs::metadata(path)
            .map_err(|source| StoreError::Local {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let store = self.store.clone();
        let location = self.location(key);
        let path = path.to_path_buf();
        let stored = self.run(key, async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let local = |source: std::io::Error| object_store::Error::Generic {
                store: "local file",
                source: Box::new(StoreError::Local {
                    path: path.clone(),
                    source,
                }),
            };
            let mut file = tokio::fs::File::open(&path).await.map_err(local)?;
            let mut writer = object_store::buffered::BufWriter::with_capacity(
                store.clone(),
                location.clone(),
                UPLOAD_CHUNK_BYTES,
            );
            loop {
                let mut chunk = bytes::BytesMut::with_capacity(UPLOAD_CHUNK_BYTES);
                while chunk.len() < UPLOAD_CHUNK_BYTES {
                    if file.read_buf(&mut chunk).await.map_err(local)? == 0 {
                        break;
                    }
                }
                if chunk.is_empty() {
                    break;
                }
                writer.put(chunk.freeze()).await?;
            }
            writer
                .shutdown()
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "archive",
                    source: Box::new(e),
                })?;
            store.head(&location).await
        })?;
        if stored.size != size {
            return Err(StoreError::Size {
                location: self.describe(key),
                stored: stored.size,
                uploaded: size,
            });
        }
        Ok(size)
    }

    /// Uploads `bytes` as `key` (one request).
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let store = self.store.clone();
        let location = self.location(key);
        self.run(key, async move {
            store.put(&location, bytes.into()).await.map(|_| ())
        })
    }

    /// The object `key`; None if there is none.
    fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let store = self.store.clone();
        let location = self.location(key);
        self.run(key, async move {
            match store.get(&location).await {
                Ok(object) => object.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Deletes every object under `key_prefix` (`<topic>/<partition>`).
    fn delete_all(&self, key_prefix: &str) -> Result<(), StoreError> {
        let store = self.store.clone();
        let location = self.location(key_prefix);
        self.run(key_prefix, async move {
            let objects: Vec<_> = store.list(Some(&location)).try_collect().await?;
            for object in objects {
                match store.delete(&object.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }
}
