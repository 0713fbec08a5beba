//! `weir::DataFrame` (feature `dataframe`): Arrow record batches kept as one Parquet object in
//! the run's object store and passed between tasks by reference (SPEC §5.2).
//!
//! Like a [`File`](crate::File), a `DataFrame` is content-addressed (`raw/<blake3>`): the upload
//! streams while it is hashed, the same bytes are stored once, and the reference — hash, size,
//! row count, the schema and the first rows as text — is its identity for action ids and cache
//! keys. The schema and first rows travel in the reference, so `weir get io` and the web UI show
//! them without reading the object.
//!
//! Writing keeps one row group in memory (at most [`DataFrame::ROW_GROUP_ROWS`] rows), not the
//! whole frame. Reading streams record batches, fetching only the column chunks it needs:
//! [`DataFrame::read_columns`] reads a projection without the other columns. Every read checks
//! that the object has the reference's size; [`DataFrame::read`] (all columns) also checks its
//! hash first, which reads every byte once more. A projection is not hash-checked (that needs
//! every byte): call [`DataFrame::verify`] for it. A missing, truncated or damaged object is an
//! error naming the reference, the task and the action; a projection of a column the frame does
//! not have names the column.

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::{AsyncArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use weir_blob::RawObject;

use crate::file::{failure, place, store};
use crate::{Error, ErrorKind, Result};

/// Rows of the frame kept as text in the reference (for display).
const HEAD_ROWS: usize = 5;
/// Longest text of one value kept in the reference.
const HEAD_CELL: usize = 48;

/// One column of a [`DataFrame`]'s schema, as carried in the reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// Its Arrow type, as Arrow writes it (`Int64`, `Utf8`, `Timestamp(ms)`, …).
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether it may hold nulls.
    pub nullable: bool,
}

/// A table in the object store, passed by reference; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataFrame {
    /// blake3 of the Parquet bytes, lower-case hex (named so that `get io` and the UI know it).
    #[serde(rename = "weir_dataframe")]
    hash: String,
    /// Size of the Parquet object in bytes.
    size: u64,
    /// Number of rows.
    rows: u64,
    /// The schema's top-level columns.
    columns: Vec<Column>,
    /// The first rows, each value as text (cut at a few dozen characters).
    head: Vec<Vec<String>>,
}

/// Writes record batches into a new [`DataFrame`]: [`DataFrameWriter::write`] each batch, then
/// [`DataFrameWriter::finish`]. Dropped without finishing, nothing is kept.
pub struct DataFrameWriter {
    writer: AsyncArrowWriter<tokio::io::DuplexStream>,
    upload: JoinHandle<weir_blob::Result<RawObject>>,
    schema: SchemaRef,
    rows: u64,
    head: Vec<Vec<String>>,
}

impl std::fmt::Debug for DataFrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataFrameWriter")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl DataFrameWriter {
    /// Adds `batch` (its schema must be the writer's).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(Error::msg(format!(
                "weir::DataFrame: a batch with columns {} does not fit the frame's {}",
                describe_fields(batch.schema().fields()),
                describe_fields(self.schema.fields())
            )));
        }
        if self.head.len() < HEAD_ROWS {
            self.head
                .extend(head_rows(batch, HEAD_ROWS - self.head.len()));
        }
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .await
            .map_err(|e| Error::msg(format!("weir::DataFrame: writing Parquet: {e}")))
    }

    /// Ends the Parquet object and waits for its upload; the frame's reference.
    pub async fn finish(self) -> Result<DataFrame> {
        let DataFrameWriter {
            writer,
            upload,
            schema,
            rows,
            head,
        } = self;
        let closed = writer.close().await;
        let object = upload
            .await
            .map_err(|e| Error::msg(format!("weir::DataFrame: the upload task failed: {e}")))?
            .map_err(|e| failure("uploading a weir::DataFrame", e))?;
        closed.map_err(|e| Error::msg(format!("weir::DataFrame: writing Parquet: {e}")))?;
        Ok(DataFrame {
            hash: object.hash,
            size: object.size,
            rows,
            columns: columns_of(&schema),
            head,
        })
    }
}

impl DataFrame {
    /// Most rows in one Parquet row group (what a writer holds in memory at once).
    pub const ROW_GROUP_ROWS: usize = 1 << 20;

    /// A writer of a new frame with `schema`, uploading as it goes.
    pub fn writer(schema: SchemaRef) -> Result<DataFrameWriter> {
        let store = store()?;
        let (write, read) = tokio::io::duplex(1 << 20);
        let upload = tokio::spawn(async move { store.put_raw(read).await });
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(Self::ROW_GROUP_ROWS))
            .build();
        let writer = AsyncArrowWriter::try_new(write, schema.clone(), Some(props))
            .map_err(|e| Error::msg(format!("weir::DataFrame: {e}")))?;
        Ok(DataFrameWriter {
            writer,
            upload,
            schema,
            rows: 0,
            head: Vec::new(),
        })
    }

    /// A frame of `batches`, all with `schema`.
    pub async fn from_batches(
        schema: SchemaRef,
        batches: impl IntoIterator<Item = RecordBatch>,
    ) -> Result<DataFrame> {
        let mut w = DataFrame::writer(schema)?;
        for batch in batches {
            w.write(&batch).await?;
        }
        w.finish().await
    }

    /// Number of rows.
    pub fn num_rows(&self) -> u64 {
        self.rows
    }

    /// Size of the Parquet object in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// blake3 of the Parquet bytes: the frame's identity.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The columns as carried in the reference.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The first rows as text, as carried in the reference.
    pub fn head(&self) -> &[Vec<String>] {
        &self.head
    }

    /// The Arrow schema, from the reference (no read).
    pub fn schema(&self) -> Result<Schema> {
        let fields = self
            .columns
            .iter()
            .map(|c| {
                let t: DataType = c.data_type.parse().map_err(|e| {
                    Error::non_recoverable(format!(
                        "weir::DataFrame {}: column {:?} has type {:?}, which Arrow cannot read back: {e}",
                        self.hash, c.name, c.data_type
                    ))
                })?;
                Ok(Field::new(&c.name, t, c.nullable))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Schema::new(fields))
    }

    /// Where the bytes are: the store's URL and the key (for display).
    pub fn uri(&self) -> Result<String> {
        Ok(format!(
            "{}/{}",
            store()?.url().trim_end_matches('/'),
            self.object()?.key
        ))
    }

    fn object(&self) -> Result<RawObject> {
        Ok(RawObject {
            key: weir_blob::raw_key(&self.hash)
                .map_err(|e| failure("a weir::DataFrame reference", e))?,
            size: self.size,
            hash: self.hash.clone(),
        })
    }

    /// Reads every byte of the object and checks its size and hash.
    pub async fn verify(&self) -> Result<()> {
        store()?
            .verify_raw(&self.object()?)
            .await
            .map_err(|e| failure("reading a weir::DataFrame", e))
    }

    /// All the rows, as a stream of record batches (the hash is checked first).
    pub async fn read(&self) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        self.verify().await?;
        self.stream(None).await
    }

    /// The named columns only, in the order given, as a stream of record batches; the other
    /// columns are not read. A name the frame does not have is an error naming it.
    pub async fn read_columns(
        &self,
        columns: &[&str],
    ) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        self.stream(Some(columns)).await
    }

    async fn stream(
        &self,
        columns: Option<&[&str]>,
    ) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let object = self.object()?;
        let (store, path) = store()?
            .raw_for_ranges(&object)
            .await
            .map_err(|e| failure("reading a weir::DataFrame", e))?;
        let reader = Ranges {
            store,
            path,
            size: object.size,
        };
        let damaged = |e: parquet::errors::ParquetError| self.damaged(&object.key, e);
        let builder = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(damaged)?;
        // The columns asked for, by index in the file; batches come in file order, so `reorder`
        // puts them in the order asked for.
        let mut reorder = None;
        let builder = match columns {
            None => builder,
            Some(names) => {
                let fields = builder.schema().fields().clone();
                let mut indices = Vec::with_capacity(names.len());
                for name in names {
                    let i = fields
                        .iter()
                        .position(|f| f.name() == name)
                        .ok_or_else(|| {
                            Error::non_recoverable(format!(
                                "weir::DataFrame {}: no column {name:?} to read (it has {})",
                                object.key,
                                describe_fields(&fields)
                            ))
                        })?;
                    indices.push(i);
                }
                let mask = ProjectionMask::roots(builder.parquet_schema(), indices.iter().copied());
                let mut in_file = indices.clone();
                in_file.sort_unstable();
                in_file.dedup();
                reorder = Some(
                    indices
                        .iter()
                        .map(|i| in_file.binary_search(i).expect("projected"))
                        .collect::<Vec<usize>>(),
                );
                builder.with_projection(mask)
            }
        };
        let stream = builder.build().map_err(damaged)?;
        let key = object.key.clone();
        let place = place();
        Ok(stream
            .map(move |b| {
                let b = b.map_err(|e| {
                    Error::with_kind(
                        ErrorKind::NonRecoverable,
                        format!("reading a weir::DataFrame{place}: object {key} is damaged: {e}"),
                    )
                })?;
                match &reorder {
                    None => Ok(b),
                    Some(idx) => b.project(idx).map_err(|e| Error::msg(e.to_string())),
                }
            })
            .boxed())
    }

    fn damaged(&self, key: &str, e: parquet::errors::ParquetError) -> Error {
        Error::with_kind(
            ErrorKind::NonRecoverable,
            format!(
                "reading a weir::DataFrame{}: object {key} is not the Parquet it should be ({} bytes, blake3 {}): {e}",
                place(),
                self.size,
                self.hash
            ),
        )
    }
}

/// Reads of a Parquet object by range, for the Parquet reader (its size known from the
/// reference and checked by `raw_for_ranges`).
struct Ranges {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    path: object_store::path::Path,
    size: u64,
}

fn parquet_error(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for Ranges {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        let store = self.store.clone();
        let path = self.path.clone();
        async move { store.get_range(&path, range).await.map_err(parquet_error) }.boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        let store = self.store.clone();
        let path = self.path.clone();
        async move {
            store
                .get_ranges(&path, &ranges)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<std::sync::Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(std::sync::Arc::new(metadata))
        }
        .boxed()
    }
}

fn columns_of(schema: &Schema) -> Vec<Column> {
    schema
        .fields()
        .iter()
        .map(|f| Column {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

fn describe_fields(fields: &arrow_schema::Fields) -> String {
    let names: Vec<String> = fields
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect();
    format!("[{}]", names.join(", "))
}

/// Up to `n` rows of `batch` as text.
fn head_rows(batch: &RecordBatch, n: usize) -> Vec<Vec<String>> {
    let options = arrow_cast::display::FormatOptions::default().with_null("null");
    let formatters: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &options).ok())
        .collect();
    (0..batch.num_rows().min(n))
        .map(|row| {
            formatters
                .iter()
                .map(|f| match f {
                    Some(f) => {
                        let mut s = f.value(row).to_string();
                        if s.len() > HEAD_CELL {
                            let mut end = HEAD_CELL;
                            while !s.is_char_boundary(end) {
                                end -= 1;
                            }
                            s.truncate(end);
                            s.push('…');
                        }
                        s
                    }
                    None => "?".to_string(),
                })
                .collect()
        })
        .collect()
}
