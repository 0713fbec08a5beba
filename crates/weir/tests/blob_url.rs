//! An object store other than `<state>/blobs` is recorded in the state: later engines use it,
//! a different one is refused, and readers (`get io`, the UI) find payloads through it.

use std::sync::LazyLock;

use weir::prelude::*;
use weir::{EngineError, EngineOptions, Runner};
use weir_store::Payload;

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("blob"));

#[weir::task(env = ENV)]
async fn echo(data: Vec<u8>) -> Result<Vec<u8>> {
    Ok(data)
}

#[tokio::test]
async fn the_object_store_url_is_recorded_and_enforced() {
    let state = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let url = format!("file://{}", elsewhere.path().display());
    let mut options = EngineOptions::new(state.path());
    options.blob_url = Some(url.clone());
    let runner = Runner::with_options(options).await.unwrap();
    let big = vec![7u8; 200_000];
    let run = runner
        .with_context(RunContext::new().name("big"))
        .run(echo(big.clone()))
        .await
        .unwrap();
    assert_eq!(run.wait().await.unwrap(), big);
    runner.engine().close().unwrap();
    drop(runner);

    // Payloads went to the given store, not to <state>/blobs.
    assert!(elsewhere.path().join("big/a0/inputs").is_file());
    assert!(!state.path().join("blobs/big").exists());
    let store = weir_store::open_read_only(state.path()).unwrap();
    let recorded = store.setting(weir_blob::BLOB_URL_SETTING).await.unwrap();
    assert_eq!(recorded.as_deref(), Some(url.as_str()));

    // A reader of the state finds the payloads through the recorded URL.
    let rec = store.run_by_name("big").await.unwrap();
    let Some(output @ Payload::Offloaded { .. }) = rec.output else {
        panic!("the output was offloaded: {:?}", rec.output)
    };
    let payloads = weir_blob::Payloads::of_state(state.path(), recorded.as_deref()).unwrap();
    let bytes = payloads.load(&output).await.unwrap();
    assert_eq!(weir_core::codec::decode::<Vec<u8>>(&bytes).unwrap(), big);
    drop(store);

    // Another URL is refused (earlier payloads would not be found); none uses the recorded one.
    let mut other = EngineOptions::new(state.path());
    other.blob_url = Some(format!("file://{}", state.path().join("other").display()));
    let err = Runner::with_options(other).await.unwrap_err();
    assert!(matches!(err, EngineError::Config(_)), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    let again = Runner::embedded(state.path()).await.unwrap();
    let run = again.resume::<Vec<u8>>("big").await.unwrap();
    assert_eq!(
        run.wait().await.unwrap(),
        big,
        "the recorded output is read back"
    );
}
