//! `weir::File`: a file whose bytes live in the run's object store and that passes between
//! tasks as a reference (SPEC §5.2).
//!
//! A `File` is a small value — the blake3 hash and the size of its bytes — so passing it to a
//! task or returning it copies nothing, and its identity is its content: the same bytes give
//! the same `File` whatever path or reader they came from, hence the same action ids and cache
//! keys. The bytes are kept under `raw/<hash>` in the engine's object store (`file://` under the
//! state directory, or `s3://`); an upload streams (never the whole file in memory) and the same
//! bytes are stored once. Reading checks the size, and a full read the hash: a missing, truncated
//! or changed object is an error naming the reference, the task and the action.
//!
//! Files are made and read inside tasks (they need the run's object store): in process, and on
//! cluster workers that reach the control plane's `s3://` store themselves. Worker processes of an
//! embedded engine, and workers without access to the store, get an error saying so (the bytes
//! never go through the engine or the control plane).

use std::ops::Range;
use std::path::Path;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use weir_blob::{BlobStore, RawObject};

use crate::{Error, ErrorKind, Result};

/// A file in the object store, passed by reference; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct File {
    /// blake3 of the bytes, lower-case hex. Named `weir_file` in the value, so that `get io` and
    /// the UI know it for a reference (`weir_blob::describe_references`).
    #[serde(rename = "weir_file")]
    hash: String,
    /// Size in bytes.
    size: u64,
}

impl File {
    /// Uploads the file at `path` (streamed).
    pub async fn from_path(path: impl AsRef<Path>) -> Result<File> {
        let path = path.as_ref();
        let f = tokio::fs::File::open(path).await.map_err(|e| {
            Error::msg(format!(
                "weir::File::from_path: cannot open {}: {e}",
                path.display()
            ))
        })?;
        File::from_reader(f).await
    }

    /// Uploads `bytes`.
    pub async fn from_bytes(bytes: impl AsRef<[u8]>) -> Result<File> {
        File::from_reader(bytes.as_ref()).await
    }

    /// Uploads what `reader` gives until its end (streamed, in parts for large files).
    pub async fn from_reader(reader: impl tokio::io::AsyncRead + Unpin + Send) -> Result<File> {
        let store = store()?;
        let object = store
            .put_raw(reader)
            .await
            .map_err(|e| failure("uploading a weir::File", e))?;
        Ok(File {
            hash: object.hash,
            size: object.size,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// blake3 of the bytes, lower-case hex: the file's identity.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The object's key in the store (`raw/<hash>`); an error for a hash that is not one.
    pub fn key(&self) -> Result<String> {
        weir_blob::raw_key(&self.hash).map_err(|e| failure("a weir::File reference", e))
    }

    /// Where the bytes are: the store's URL and the key (for display).
    pub fn uri(&self) -> Result<String> {
        Ok(format!(
            "{}/{}",
            store()?.url().trim_end_matches('/'),
            self.key()?
        ))
    }

    fn object(&self) -> Result<RawObject> {
        Ok(RawObject {
            key: self.key()?,
            size: self.size,
            hash: self.hash.clone(),
        })
    }

    /// All the bytes, checked against size and hash.
    pub async fn bytes(&self) -> Result<Vec<u8>> {
        let object = self.object()?;
        store()?
            .get_raw(&object)
            .await
            .map_err(|e| failure("reading a weir::File", e))
    }

    /// Bytes `range` (its size is checked; the hash needs every byte, see [`File::bytes`]).
    pub async fn read_range(&self, range: Range<u64>) -> Result<Vec<u8>> {
        let object = self.object()?;
        store()?
            .get_raw_range(&object, range)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| failure("reading a weir::File", e))
    }

    /// An async reader of all the bytes (size checked first; the hash once the last byte is
    /// read: a mismatch is an error from the last read, so do not trust what was read until
    /// the reader returned its end).
    pub async fn reader(&self) -> Result<impl tokio::io::AsyncRead + Send + Unpin + 'static> {
        self.range_reader(0..self.size).await
    }

    /// An async reader of bytes `range` (the object's size checked first; the hash only when
    /// the range is the whole file).
    pub async fn range_reader(
        &self,
        range: Range<u64>,
    ) -> Result<impl tokio::io::AsyncRead + Send + Unpin + 'static> {
        let object = self.object()?;
        let stream = store()?
            .raw_stream(&object, range)
            .await
            .map_err(|e| failure("reading a weir::File", e))?;
        let place = place();
        Ok(tokio_util::io::StreamReader::new(stream.map(move |r| {
            r.map_err(|e| std::io::Error::other(format!("reading a weir::File{place}: {e}")))
        })))
    }

    /// Streams all the bytes into `out` (size and hash checked at the end: on an error, what
    /// was written is not the file's).
    pub async fn read_to(
        &self,
        out: &mut (impl tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<()> {
        let object = self.object()?;
        store()?
            .copy_raw_to(&object, out)
            .await
            .map_err(|e| failure("reading a weir::File", e))
    }

    /// Downloads the bytes to `path` (streamed; written beside it and renamed into place once
    /// size and hash are checked, so `path` never holds a partial or damaged file).
    pub async fn download(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let object = self.object()?;
        let store = store()?;
        let tmp = path.with_file_name(format!(
            ".{}.weir-download-{}",
            path.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            std::process::id()
        ));
        let io = |e: std::io::Error| {
            Error::msg(format!("weir::File::download to {}: {e}", path.display()))
        };
        let mut out = tokio::fs::File::create(&tmp).await.map_err(io)?;
        if let Err(e) = store.copy_raw_to(&object, &mut out).await {
            drop(out);
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(failure("downloading a weir::File", e));
        }
        out.sync_all().await.map_err(io)?;
        tokio::fs::rename(&tmp, path).await.map_err(io)
    }
}

pub(crate) fn store() -> Result<BlobStore> {
    weir_engine::object_store().map_err(Error::msg)
}

/// ` (run R, task T, action A)` inside a task, for errors; empty outside one.
pub(crate) fn place() -> String {
    match weir_engine::context() {
        Some(c) => format!(" (run {}, task {}, action {})", c.run, c.task, c.action),
        None => String::new(),
    }
}

/// A storage error as the task sees it: naming what was done, the reference, and the task's run
/// and action; a lost or damaged object is not retried (the bytes are gone), a store that
/// cannot be reached is a system error (retried).
pub(crate) fn failure(what: &str, e: weir_blob::Error) -> Error {
    let place = place();
    let kind = match e {
        weir_blob::Error::Missing { .. }
        | weir_blob::Error::Corrupt { .. }
        | weir_blob::Error::BadKey { .. } => ErrorKind::NonRecoverable,
        _ => ErrorKind::System,
    };
    Error::with_kind(kind, format!("{what}{place}: {e}"))
}

/// A directory tree in the object store, passed by reference: each file's path relative to the
/// tree's root (with `/` between segments) and its [`File`], in path order. Its identity is the
/// names and contents of its files (empty directories are not kept). Uploads and downloads run
/// [`Dir::CONCURRENCY`] files at a time; [`Dir::files`] lists them without downloading anything.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dir {
    #[serde(rename = "weir_dir")]
    files: Vec<(String, File)>,
}

impl Dir {
    /// Files uploaded or downloaded at once.
    pub const CONCURRENCY: usize = 8;

    /// Uploads every file under `root` (following no symbolic link out of it: links are
    /// refused with an error naming them).
    pub async fn from_path(root: impl AsRef<Path>) -> Result<Dir> {
        let root = root.as_ref().to_path_buf();
        let mut found = Vec::new();
        let mut stack = vec![root.clone()];
        let io = |p: &Path, e: std::io::Error| {
            Error::msg(format!("weir::Dir::from_path: {}: {e}", p.display()))
        };
        while let Some(dir) = stack.pop() {
            let mut entries = tokio::fs::read_dir(&dir).await.map_err(|e| io(&dir, e))?;
            while let Some(entry) = entries.next_entry().await.map_err(|e| io(&dir, e))? {
                let path = entry.path();
                let kind = entry.file_type().await.map_err(|e| io(&path, e))?;
                if kind.is_dir() {
                    stack.push(path);
                } else if kind.is_file() {
                    let rel = path
                        .strip_prefix(&root)
                        .expect("under the root")
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().to_string())
                        .collect::<Vec<_>>()
                        .join("/");
                    found.push((rel, path));
                } else {
                    return Err(Error::msg(format!(
                        "weir::Dir::from_path: {} is neither a file nor a directory (links are not followed)",
                        path.display()
                    )));
                }
            }
        }
        found.sort();
        let uploads = futures::stream::iter(
            found
                .into_iter()
                .map(|(rel, path)| async move { File::from_path(&path).await.map(|f| (rel, f)) }),
        );
        let files: Vec<(String, File)> = uploads
            .buffered(Self::CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        Ok(Dir { files })
    }

    /// The files, by relative path, without downloading them.
    pub fn files(&self) -> impl Iterator<Item = (&str, &File)> {
        self.files.iter().map(|(p, f)| (p.as_str(), f))
    }

    /// The file at relative path `path`, if the tree has one.
    pub fn get(&self, path: &str) -> Option<&File> {
        self.files
            .binary_search_by(|(p, _)| p.as_str().cmp(path))
            .ok()
            .map(|i| &self.files[i].1)
    }

    /// Total size of its files in bytes.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|(_, f)| f.size()).sum()
    }

    /// Downloads the tree under `root` (created if needed), each file checked and renamed into
    /// place. A path that could leave `root` (`..`, an absolute or empty segment) is refused
    /// before anything is written.
    pub async fn download(&self, root: impl AsRef<Path>) -> Result<()> {
        let root = root.as_ref();
        for (rel, _) in &self.files {
            let bad = rel.is_empty()
                || rel.starts_with('/')
                || rel
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('\\'));
            if bad {
                return Err(Error::non_recoverable(format!(
                    "weir::Dir: the path {rel:?} would leave the directory it is downloaded to: refused"
                )));
            }
        }
        let root = root.to_path_buf();
        let downloads =
            futures::stream::iter(self.files.clone().into_iter().map(move |(rel, f)| {
                let path = root.join(&rel);
                async move {
                    if let Some(parent) = path.parent() {
                        tokio::fs::create_dir_all(parent).await.map_err(|e| {
                            Error::msg(format!("weir::Dir::download: {}: {e}", parent.display()))
                        })?;
                    }
                    f.download(&path).await
                }
            }));
        downloads
            .buffer_unordered(Self::CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()?;
        Ok(())
    }
}
