//! `weir::File` in the embedded engine (file:// object store under the state directory): passed
//! by reference, read back whole, by range or downloaded, cached by content, and bad objects
//! named in errors.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use weir::prelude::*;
use weir::{File, Runner};

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("files"));

static COUNTS: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);
fn bump(key: &str) -> u64 {
    let mut m = COUNTS.lock().unwrap();
    let c = m.entry(key.to_string()).or_default();
    *c += 1;
    *c
}

async fn runner() -> (tempfile::TempDir, Runner) {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::embedded(dir.path()).await.unwrap();
    (dir, runner)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[weir::task(env = ENV)]
async fn make(seed: u8, len: u64) -> Result<File> {
    File::from_bytes(pattern(seed, len as usize)).await
}

/// The length and a checksum of a file's bytes, and bytes 10..20 read by range.
#[weir::task(env = ENV)]
async fn inspect(f: File) -> Result<(u64, u64, Vec<u8>)> {
    let bytes = f.bytes().await?;
    let sum = bytes.iter().map(|&b| b as u64).sum();
    let range = f.read_range(10..20).await?;
    Ok((bytes.len() as u64, sum, range))
}

#[weir::task(env = ENV)]
async fn pass_along(seed: u8, len: u64) -> Result<(File, (u64, u64, Vec<u8>))> {
    let f = make(seed, len).await?;
    let seen = inspect(f.clone()).await?;
    Ok((f, seen))
}

#[tokio::test]
async fn a_file_passes_between_tasks_as_a_small_reference_to_its_bytes() {
    let (dir, runner) = runner().await;
    let len = 3 << 20;
    let run = runner
        .with_context(RunContext::new().name("along"))
        .run(pass_along(7, len))
        .await
        .unwrap();
    let (f, (n, sum, range)) = run.wait().await.unwrap();
    let bytes = pattern(7, len as usize);
    assert_eq!(n, len);
    assert_eq!(sum, bytes.iter().map(|&b| b as u64).sum::<u64>());
    assert_eq!(range, bytes[10..20].to_vec());
    assert_eq!(f.size(), len);
    assert_eq!(f.hash(), blake3::hash(&bytes).to_hex().as_str());
    // The bytes are in the object store under raw/<hash>, once; the actions' payloads are the
    // small reference (kept inline in the state's rows, no other object).
    let raw = dir.path().join("blobs/raw").join(f.hash());
    assert_eq!(std::fs::read(&raw).unwrap(), bytes);
    let objects: Vec<_> = walk(&dir.path().join("blobs"));
    assert_eq!(
        objects
            .iter()
            .filter(|p| !p.contains(".uploads"))
            .collect::<Vec<_>>(),
        vec![&format!("raw/{}", f.hash())],
        "{objects:?}"
    );
}

fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().to_string());
            }
        }
    }
    out
}

#[weir::task(env = ENV)]
async fn upload_path(path: String) -> Result<File> {
    File::from_path(&path).await
}

#[weir::task(env = ENV)]
async fn download_to(f: File, path: String) -> Result<u64> {
    f.download(&path).await?;
    Ok(std::fs::metadata(&path).map_err(Error::msg)?.len())
}

/// Counts its executions per tag; cached by its inputs (a file is its content).
#[weir::task(env = ENV, cache = "v1")]
async fn digest(tag: String, f: File) -> Result<String> {
    bump(&tag);
    let bytes = f.bytes().await?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

#[weir::task(env = ENV)]
async fn upload_and_digest(tag: String, path: String) -> Result<String> {
    let f = upload_path(path).await?;
    digest(tag, f).await
}

#[tokio::test]
async fn from_a_path_and_back_to_one_and_cached_by_content_whatever_the_path() {
    let (dir, runner) = runner().await;
    let bytes = pattern(3, (9 << 20) + 123);
    let (a, b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
    std::fs::write(&a, &bytes).unwrap();
    std::fs::write(&b, &bytes).unwrap();
    let f = runner
        .run(upload_path(a.display().to_string()))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(f.size(), bytes.len() as u64);
    let out = dir.path().join("out.bin");
    let n = runner
        .run(download_to(f, out.display().to_string()))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(n, bytes.len() as u64);
    assert!(std::fs::read(&out).unwrap() == bytes);
    // The same content from another path: the cached digest is reused.
    let tag = "by-content".to_string();
    for path in [&a, &b] {
        let d = runner
            .run(upload_and_digest(tag.clone(), path.display().to_string()))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert_eq!(d, blake3::hash(&bytes).to_hex().to_string());
    }
    assert_eq!(COUNTS.lock().unwrap()[&tag], 1, "the second is a cache hit");
}

#[tokio::test]
async fn a_damaged_or_missing_object_is_an_error_naming_it_and_the_action() {
    let (dir, runner) = runner().await;
    let f = runner
        .run(make(9, 100_000))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let raw = dir.path().join("blobs/raw").join(f.hash());
    let mut bytes = std::fs::read(&raw).unwrap();
    bytes[500] ^= 1;
    std::fs::write(&raw, &bytes).unwrap();
    let run = runner
        .with_context(RunContext::new().name("damaged"))
        .run(inspect(f.clone()))
        .await
        .unwrap();
    let e = run.wait().await.unwrap_err();
    let text = format!("{e}");
    assert!(
        text.contains(&format!("raw/{}", f.hash()))
            && text.contains("corrupt")
            && text.contains("(run damaged, task ")
            && text.contains("inspect, action a0)"),
        "{text}"
    );
    assert_eq!(e.kind(), ErrorKind::NonRecoverable, "{text}");
    // A download of it fails the same way and leaves no file behind.
    let target = dir.path().join("damaged.bin");
    let text = format!(
        "{}",
        runner
            .run(download_to(f.clone(), target.display().to_string()))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap_err()
    );
    assert!(
        text.contains(&format!("raw/{}", f.hash())) && text.contains("corrupt"),
        "{text}"
    );
    assert!(!target.exists());
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("weir-download"))
            .count(),
        0
    );
    std::fs::remove_file(&raw).unwrap();
    let run = runner
        .with_context(RunContext::new().name("missing"))
        .run(inspect(f.clone()))
        .await
        .unwrap();
    let text = format!("{}", run.wait().await.unwrap_err());
    assert!(
        text.contains(&format!("raw/{}", f.hash())) && text.contains("missing"),
        "{text}"
    );
    // A reference whose hash is not one cannot name another object.
    let forged: File =
        serde_json::from_str(r#"{"weir_file": "../../etc/passwd", "size": 1}"#).unwrap();
    let text = format!(
        "{}",
        runner
            .run(inspect(forged))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap_err()
    );
    assert!(text.contains("64 lower-case hex digits"), "{text}");
}

/// Reads `f` through its async reader whole, and bytes `from..to` through a range reader: the
/// blake3 of each.
#[weir::task(env = ENV)]
async fn read_streams(f: File, from: u64, to: u64) -> Result<(String, String)> {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    f.reader()
        .await?
        .read_to_end(&mut all)
        .await
        .map_err(Error::msg)?;
    let mut part = Vec::new();
    f.range_reader(from..to)
        .await?
        .read_to_end(&mut part)
        .await
        .map_err(Error::msg)?;
    let hex = |b: &[u8]| blake3::hash(b).to_hex().to_string();
    Ok((hex(&all), hex(&part)))
}

#[tokio::test]
async fn async_readers_stream_the_bytes_whole_or_a_range_and_catch_damage() {
    let (dir, runner) = runner().await;
    // Over 8 MiB: read in several ranges.
    let len = (17 << 20) + 5;
    let f = runner
        .run(make(3, len))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let bytes = pattern(3, len as usize);
    let from = (8 << 20) - 10;
    let to = (16 << 20) + 10;
    let (all, part) = runner
        .run(read_streams(f.clone(), from, to))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(all, blake3::hash(&bytes).to_hex().as_str());
    let want = blake3::hash(&bytes[from as usize..to as usize])
        .to_hex()
        .to_string();
    assert_eq!(part, want);
    // A range past the end is refused; a changed byte fails the whole read (at its end).
    let text = runner
        .run(read_streams(f.clone(), 0, len + 1))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("outside the object"), "{text}");
    let raw = dir.path().join("blobs/raw").join(f.hash());
    let mut damaged = bytes.clone();
    damaged[12 << 20] ^= 4;
    std::fs::write(&raw, &damaged).unwrap();
    let text = runner
        .with_context(RunContext::new().name("stream-damaged"))
        .run(read_streams(f.clone(), 0, 10))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("corrupt") && text.contains("(run stream-damaged, task "),
        "{text}"
    );
}

#[tokio::test]
async fn outside_a_task_there_is_no_store_and_it_says_so() {
    let e = File::from_bytes(b"x").await.unwrap_err();
    assert!(e.message().contains("inside a task"), "{e}");
}

#[weir::task(env = ENV)]
async fn upload_dir(path: String) -> Result<weir::Dir> {
    weir::Dir::from_path(&path).await
}

/// Lists the tree without downloading, then downloads it under `to`; the listing.
#[weir::task(env = ENV)]
async fn list_and_download(d: weir::Dir, to: String) -> Result<Vec<(String, u64)>> {
    let listed = d.files().map(|(p, f)| (p.to_string(), f.size())).collect();
    d.download(&to).await?;
    Ok(listed)
}

#[tokio::test]
async fn a_directory_tree_goes_up_and_down_by_reference() {
    let (dir, runner) = runner().await;
    let src = dir.path().join("tree");
    let mut want = Vec::new();
    for i in 0..20u8 {
        let rel = match i % 3 {
            0 => format!("f{i:02}.bin"),
            1 => format!("sub/f{i:02}.bin"),
            _ => format!("sub/deeper/f{i:02}.bin"),
        };
        let bytes = pattern(i, 1000 + i as usize * 5000);
        let path = src.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        want.push((rel, bytes));
    }
    // Two files with the same bytes are stored once.
    std::fs::write(src.join("copy.bin"), &want[0].1).unwrap();
    want.push(("copy.bin".into(), want[0].1.clone()));
    want.sort();
    let d = runner
        .run(upload_dir(src.display().to_string()))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(d.files().count(), want.len());
    assert_eq!(
        d.size(),
        want.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    assert_eq!(d.get("sub/f01.bin").unwrap().size(), 6000);
    assert!(d.get("nope").is_none());
    let raw: Vec<_> = walk(&dir.path().join("blobs"))
        .into_iter()
        .filter(|p| p.starts_with("raw/") && !p.contains(".uploads"))
        .collect();
    assert_eq!(raw.len(), want.len() - 1, "same bytes stored once");
    let to = dir.path().join("copy");
    let listed = runner
        .run(list_and_download(d.clone(), to.display().to_string()))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(
        listed,
        want.iter()
            .map(|(p, b)| (p.clone(), b.len() as u64))
            .collect::<Vec<_>>()
    );
    for (rel, bytes) in &want {
        assert!(&std::fs::read(to.join(rel)).unwrap() == bytes, "{rel}");
    }
    // A forged tree whose path leaves the target: refused, nothing written outside.
    let one = serde_json::to_value(d.get("copy.bin").unwrap()).unwrap();
    let forged: weir::Dir =
        serde_json::from_value(serde_json::json!({"weir_dir": [["../escaped.bin", one]]})).unwrap();
    let out = dir.path().join("forged");
    let e = runner
        .run(list_and_download(forged, out.display().to_string()))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_err();
    assert!(format!("{e}").contains("would leave the directory"), "{e}");
    assert!(!dir.path().join("escaped.bin").exists());
}
