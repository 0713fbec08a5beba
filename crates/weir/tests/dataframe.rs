//! `weir::DataFrame` (feature `dataframe`) in the embedded engine, on the file:// object store
//! under the state directory: Arrow batches written as Parquet by one task and read back by
//! another by reference, whole or by a projection; the schema and first rows in the reference;
//! cached by content; bad objects and unknown columns named in errors.
//! (S3: `dataframe_s3.rs`.)

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use weir::arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use weir::arrow::schema::{DataType, Field, Schema};
use weir::prelude::*;
use weir::{DataFrame, Runner};

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("frames"));

static COUNTS: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);
fn bump(key: &str) -> u64 {
    let mut m = COUNTS.lock().unwrap();
    let c = m.entry(key.to_string()).or_default();
    *c += 1;
    *c
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, false),
    ]))
}

/// Rows `from..to`: id, name (null every 7th), score = id / 2.
fn batch(from: i64, to: i64) -> RecordBatch {
    let ids: Vec<i64> = (from..to).collect();
    let names: Vec<Option<String>> = ids
        .iter()
        .map(|i| (i % 7 != 0).then(|| format!("n{i}")))
        .collect();
    let scores: Vec<f64> = ids.iter().map(|&i| i as f64 / 2.0).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
            Arc::new(Float64Array::from(scores)),
        ],
    )
    .unwrap()
}

#[weir::task(env = ENV)]
async fn make(rows: i64, per_batch: i64) -> Result<DataFrame> {
    let mut w = DataFrame::writer(schema())?;
    let mut at = 0;
    while at < rows {
        let to = (at + per_batch).min(rows);
        w.write(&batch(at, to)).await?;
        at = to;
    }
    w.finish().await
}

/// Rows, sum of ids, nulls in `name`, sum of scores: reading every column.
#[weir::task(env = ENV)]
async fn totals(df: DataFrame) -> Result<(u64, i64, u64, f64)> {
    let mut stream = df.read().await?;
    let (mut rows, mut ids, mut nulls, mut scores) = (0u64, 0i64, 0u64, 0f64);
    while let Some(b) = futures::StreamExt::next(&mut stream).await {
        let b = b?;
        rows += b.num_rows() as u64;
        let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        ids += id.values().iter().sum::<i64>();
        nulls += b.column(1).null_count() as u64;
        let s = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        scores += s.values().iter().sum::<f64>();
    }
    Ok((rows, ids, nulls, scores))
}

/// The names of the columns a projection gives, and the sum of `score`.
#[weir::task(env = ENV)]
async fn project(df: DataFrame, columns: Vec<String>) -> Result<(Vec<String>, f64)> {
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut stream = df.read_columns(&names).await?;
    let mut got = Vec::new();
    let mut sum = 0.0;
    while let Some(b) = futures::StreamExt::next(&mut stream).await {
        let b = b?;
        got = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        if let Ok(i) = b.schema().index_of("score") {
            let s = b.column(i).as_any().downcast_ref::<Float64Array>().unwrap();
            sum += s.values().iter().sum::<f64>();
        }
    }
    Ok((got, sum))
}

#[weir::task(env = ENV)]
async fn make_and_total(rows: i64) -> Result<(DataFrame, (u64, i64, u64, f64))> {
    let df = make(rows, 10_000).await?;
    let t = totals(df.clone()).await?;
    Ok((df, t))
}

#[weir::task(env = ENV, cache = "v1")]
async fn cached_rows(tag: String, df: DataFrame) -> Result<u64> {
    bump(&tag);
    Ok(df.num_rows())
}

#[weir::task(env = ENV)]
async fn make_then_count(tag: String, rows: i64, per_batch: i64) -> Result<u64> {
    let df = make(rows, per_batch).await?;
    cached_rows(tag, df).await
}

async fn runner() -> (tempfile::TempDir, Runner) {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::embedded(dir.path()).await.unwrap();
    (dir, runner)
}

#[tokio::test]
async fn a_frame_passes_between_tasks_by_reference_with_its_schema_and_first_rows() {
    let (dir, runner) = runner().await;
    let rows = 100_000i64;
    let run = runner
        .with_context(RunContext::new().name("frames"))
        .run(make_and_total(rows))
        .await
        .unwrap();
    let (df, (n, ids, nulls, scores)) = run.wait().await.unwrap();
    assert_eq!(n, rows as u64);
    assert_eq!(ids, (0..rows).sum::<i64>());
    assert_eq!(nulls, (0..rows).filter(|i| i % 7 == 0).count() as u64);
    assert_eq!(scores, (0..rows).map(|i| i as f64 / 2.0).sum::<f64>());
    assert_eq!(df.num_rows(), rows as u64);
    let cols: Vec<(&str, &str, bool)> = df
        .columns()
        .iter()
        .map(|c| (c.name.as_str(), c.data_type.as_str(), c.nullable))
        .collect();
    assert_eq!(
        cols,
        vec![
            ("id", "Int64", false),
            ("name", "Utf8", true),
            ("score", "Float64", false)
        ]
    );
    assert_eq!(df.schema().unwrap(), *schema());
    assert_eq!(df.head().len(), 5);
    assert_eq!(df.head()[0], vec!["0", "null", "0.0"]);
    assert_eq!(df.head()[3], vec!["3", "n3", "1.5"]);
    // The Parquet object is in the store under raw/<hash>, with the reference's size and hash.
    let raw = std::fs::read(dir.path().join("blobs/raw").join(df.hash())).unwrap();
    assert_eq!(raw.len() as u64, df.size());
    assert_eq!(blake3::hash(&raw).to_hex().as_str(), df.hash());
    assert_eq!(&raw[..4], b"PAR1");

    // A projection, in the order asked for, reads those columns only.
    let (names, sum) = runner
        .run(project(df.clone(), vec!["score".into(), "id".into()]))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(names, vec!["score", "id"]);
    assert_eq!(sum, scores);
    let (names, sum) = runner
        .run(project(df.clone(), vec!["name".into()]))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!((names, sum), (vec!["name".to_string()], 0.0));

    // A column it does not have: an error naming it, the columns there are, and the action.
    let e = runner
        .with_context(RunContext::new().name("nocol"))
        .run(project(df.clone(), vec!["id".into(), "price".into()]))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("no column \"price\"") && text.contains("id: Int64, name: Utf8"),
        "{text}"
    );
    assert_eq!(e.kind(), ErrorKind::NonRecoverable, "{text}");
}

#[tokio::test]
async fn the_same_rows_are_the_same_frame_and_hit_the_cache() {
    let (_dir, runner) = runner().await;
    let tag = "frames-cache".to_string();
    // Written in batches of different sizes, to different runs: the same Parquet bytes.
    let a = runner
        .run(make_then_count(tag.clone(), 5_000, 1_000))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let b = runner
        .run(make_then_count(tag.clone(), 5_000, 1_000))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!((a, b), (5_000, 5_000));
    assert_eq!(
        COUNTS.lock().unwrap()[&tag],
        1,
        "the second was a cache hit"
    );
    let c = runner
        .run(make_then_count(tag.clone(), 5_001, 1_000))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(c, 5_001);
    assert_eq!(COUNTS.lock().unwrap()[&tag], 2, "other rows, another frame");
}

/// The error of reading `df` whole (`columns` None) or a projection, in a run named `name`.
async fn fail(runner: &Runner, df: &DataFrame, name: &str, columns: Option<Vec<String>>) -> Error {
    let r = runner.with_context(RunContext::new().name(name));
    match columns {
        None => r
            .run(totals(df.clone()))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap_err(),
        Some(c) => r
            .run(project(df.clone(), c))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap_err(),
    }
}

#[tokio::test]
async fn a_damaged_truncated_or_missing_object_is_an_error_naming_it_the_task_and_action() {
    let (dir, runner) = runner().await;
    let df = runner
        .run(make(20_000, 5_000))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let raw = dir.path().join("blobs/raw").join(df.hash());
    let good = std::fs::read(&raw).unwrap();
    let key = format!("raw/{}", df.hash());
    // One bit changed in the middle: a full read checks the hash.
    let mut bytes = good.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&raw, &bytes).unwrap();
    let e = fail(&runner, &df, "flipped", None).await;
    let text = e.to_string();
    assert!(
        text.contains(&key)
            && text.contains("corrupt")
            && text.contains("(run flipped, task ")
            && text.contains("totals, action a0)"),
        "{text}"
    );
    assert_eq!(e.kind(), ErrorKind::NonRecoverable);

    // Cut short: the size is checked before any read, projection or not.
    std::fs::write(&raw, &good[..good.len() - 100]).unwrap();
    let text = fail(&runner, &df, "cut", Some(vec!["id".into()]))
        .await
        .to_string();
    assert!(
        text.contains(&key) && text.contains("corrupt") && text.contains("action a0"),
        "{text}"
    );

    // Its footer overwritten, same size: a projection (no hash check) fails decoding, naming it.
    let mut bytes = good.clone();
    let n = bytes.len();
    for b in &mut bytes[n - 40..n - 4] {
        *b = 0xEE;
    }
    std::fs::write(&raw, &bytes).unwrap();
    let text = fail(&runner, &df, "footer", Some(vec!["id".into()]))
        .await
        .to_string();
    assert!(
        text.contains(&key)
            && text.contains("not the Parquet it should be")
            && text.contains("(run footer, task "),
        "{text}"
    );

    // Gone.
    std::fs::remove_file(&raw).unwrap();
    let text = fail(&runner, &df, "gone", None).await.to_string();
    assert!(text.contains(&key) && text.contains("missing"), "{text}");

    // Put back, it reads again.
    std::fs::write(&raw, &good).unwrap();
    let (n, ..) = runner
        .run(totals(df.clone()))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(n, 20_000);

    // A forged reference cannot name another object.
    let mut forged = serde_json::to_value(&df).unwrap();
    forged["weir_dataframe"] = "../../etc/passwd".into();
    let forged: DataFrame = serde_json::from_value(forged).unwrap();
    let text = runner
        .run(totals(forged))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("64 lower-case hex digits"), "{text}");
}

#[tokio::test]
async fn a_batch_of_another_schema_is_refused_naming_both() {
    #[weir::task(env = ENV)]
    async fn mismatched() -> Result<DataFrame> {
        let mut w = DataFrame::writer(schema())?;
        let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let b = RecordBatch::try_new(other, vec![Arc::new(Int64Array::from(vec![1]))]).unwrap();
        w.write(&b).await?;
        w.finish().await
    }
    let (_dir, runner) = runner().await;
    let text = runner
        .run(mismatched())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("[x: Int64]") && text.contains("[id: Int64, name: Utf8, score: Float64]"),
        "{text}"
    );
}
