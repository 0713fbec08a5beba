//! `s3://` stores against a real S3-compatible server (moto, see `moto/mod.rs`): payloads round
//! trip under the prefix, large ones as multipart uploads; a missing bucket, a deleted and a
//! damaged object are errors naming what is wrong.

mod moto;

use weir_blob::{BlobStore, Error, MULTIPART_PART_SIZE, MULTIPART_THRESHOLD, PayloadKey, Payloads};
use weir_core::Payload;

/// `len` bytes that differ from one part to the next.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn payloads_round_trip_under_the_prefix_and_large_ones_go_in_parts() {
    let Some(moto) = moto::Moto::start() else {
        return;
    };
    moto.create_bucket("weir-payloads");
    let store = BlobStore::from_url_with_env("s3://weir-payloads/team/a", moto.env()).unwrap();
    assert_eq!(store.url(), "s3://weir-payloads/team/a");
    store.check().await.unwrap();
    store.check_blocking().unwrap();
    let payloads = Payloads::new(store.clone(), 16);

    let small = payloads
        .store(
            PayloadKey::Inputs {
                run: "r1",
                action: &"a1",
            },
            b"tiny",
        )
        .await
        .unwrap();
    assert_eq!(small, Payload::Inline(b"tiny".to_vec()));
    let medium_bytes = pseudo_random(100_000);
    let medium = payloads
        .store(
            PayloadKey::Inputs {
                run: "r1",
                action: &"a0",
            },
            &medium_bytes,
        )
        .await
        .unwrap();
    // Over the threshold and not a whole number of parts: two full parts and a short one.
    let large_bytes = pseudo_random(2 * MULTIPART_PART_SIZE + 12_345);
    assert!(large_bytes.len() > MULTIPART_THRESHOLD);
    let output = PayloadKey::Outputs {
        run: "r1",
        action: &"a0",
        attempt: 1,
    };
    let large = payloads.store(output, &large_bytes).await.unwrap();
    assert!(matches!(&large, Payload::Offloaded { path, .. } if path == "r1/a0/1/outputs"));
    assert_eq!(&*payloads.load(&medium).await.unwrap(), &medium_bytes[..]);
    assert_eq!(&*payloads.load(&large).await.unwrap(), &large_bytes[..]);

    // Everything is under the prefix; the large value was uploaded in 3 parts.
    assert_eq!(
        moto.keys("weir-payloads"),
        ["team/a/r1/a0/1/outputs", "team/a/r1/a0/inputs"]
    );
    let (etag, size) = moto.head_object("weir-payloads", "team/a/r1/a0/1/outputs");
    assert!(etag.ends_with("-3\""), "a multipart ETag: {etag}");
    assert_eq!(size, large_bytes.len() as u64);
    let (etag, _) = moto.head_object("weir-payloads", "team/a/r1/a0/inputs");
    assert!(!etag.contains('-'), "one upload: {etag}");

    // Keys that would leave the prefix are refused, and nothing is written.
    for key in ["../x", "a/../../x", "/etc/passwd", "a//b", ""] {
        let e = store.put(key, vec![1]).await.unwrap_err();
        assert!(matches!(e, Error::BadKey { .. }), "{key}: {e}");
        assert!(
            matches!(store.get(key).await, Err(Error::BadKey { .. })),
            "{key}"
        );
    }
    assert_eq!(moto.keys("weir-payloads").len(), 2);
    // The same objects seen from the bucket's root.
    let root = BlobStore::from_url_with_env("s3://weir-payloads", moto.env()).unwrap();
    assert_eq!(root.get("team/a/r1/a0/inputs").await.unwrap(), medium_bytes);

    // URLs that name no bucket or a prefix that is not plain segments.
    for url in [
        "s3://",
        "s3:///p",
        "s3://b/../x",
        "s3://b/a//c",
        "s3://b/./c",
        "s3://b/p?x=1",
        "s3://no spaces",
    ] {
        let e = BlobStore::from_url_with_env(url, moto.env());
        assert!(matches!(e, Err(Error::BadUrl { .. })), "{url}");
    }
}

#[tokio::test]
async fn a_missing_bucket_a_deleted_or_damaged_object_are_errors_naming_them() {
    let Some(moto) = moto::Moto::start() else {
        return;
    };
    // A missing bucket: the check when the store is opened says which, and where.
    let missing = BlobStore::from_url_with_env("s3://no-such-bucket/p", moto.env()).unwrap();
    for e in [
        missing.check().await.unwrap_err(),
        missing.check_blocking().unwrap_err(),
    ] {
        let text = e.to_string();
        assert!(
            matches!(e, Error::Unavailable { .. }) && !e.is_lost(),
            "{e}"
        );
        assert!(text.contains("\"no-such-bucket\""), "{text}");
        assert!(text.contains("does not exist"), "{text}");
        assert!(text.contains(&moto.endpoint()), "{text}");
    }

    moto.create_bucket("weir-damage");
    let store = BlobStore::from_url_with_env("s3://weir-damage/pre", moto.env()).unwrap();
    store.check().await.unwrap();
    let payloads = Payloads::new(store, 0);
    let key = PayloadKey::Inputs {
        run: "r",
        action: &"a1",
    };
    let p = payloads.store(key, &[1, 2, 3, 4]).await.unwrap();
    let object = "pre/r/a1/inputs";
    // One changed byte, same size: the content hash tells.
    moto.put_object("weir-damage", object, &[1, 2, 3, 5]);
    let e = payloads.load(&p).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }) && e.is_lost(), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("\"r/a1/inputs\"") && text.contains("s3://weir-damage/pre"),
        "{text}"
    );
    // Truncated.
    moto.put_object("weir-damage", object, &[1, 2]);
    assert!(matches!(
        payloads.load(&p).await,
        Err(Error::Corrupt { .. })
    ));
    // Deleted.
    moto.delete_object("weir-damage", object);
    let e = payloads.load(&p).await.unwrap_err();
    assert!(matches!(e, Error::Missing { .. }) && e.is_lost(), "{e}");
    assert!(e.to_string().contains("\"r/a1/inputs\""), "{e}");
    // Restored: read again.
    moto.put_object("weir-damage", object, &[1, 2, 3, 4]);
    assert_eq!(&*payloads.load(&p).await.unwrap(), &[1, 2, 3, 4]);
}
