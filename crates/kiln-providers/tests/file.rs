//! Behaviour of the `file` provider against a real temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_engine::provider::{
    Applied, Attributes, Drift, Observation, Provider, ProviderContext, ProviderError, Recorded,
};
use kiln_providers::FileProvider;
use serde_json::{Value, json};

fn context(root: &Path) -> ProviderContext {
    ProviderContext::new(root.to_path_buf(), "test".into())
}

fn attrs(value: Value) -> Attributes {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn recorded(attributes: &Attributes, applied: &Applied) -> Recorded {
    Recorded {
        address: "resources.motd".into(),
        kind: "file".into(),
        attributes: attributes.clone(),
        outputs: applied.outputs.clone(),
        private: applied.private.clone(),
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn create_writes_content_mode_and_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let desired = attrs(json!({ "path": "etc/deep/motd", "content": "hello\n", "mode": "0640" }));
    let applied = FileProvider::new()
        .create(&ctx, "file", "resources.motd", &desired)
        .await
        .unwrap();

    let path = dir.path().join("etc/deep/motd");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\n");
    assert_eq!(mode_of(&path), 0o640);
    assert_eq!(applied.outputs["path"], json!(path.to_string_lossy()));
    assert_eq!(applied.outputs["size"], json!(6));
    let sha = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    assert_eq!(applied.outputs["sha256"], json!(sha));
    assert_eq!(applied.private, json!({ "sha256": sha, "mode": "0640" }));
    // No temporary file is left beside the target.
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );
}

#[tokio::test]
async fn default_mode_is_0644() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let desired = attrs(json!({ "path": "a.txt", "content": "x" }));
    FileProvider::new()
        .create(&ctx, "file", "resources.a", &desired)
        .await
        .unwrap();
    assert_eq!(mode_of(&dir.path().join("a.txt")), 0o644);
}

#[tokio::test]
async fn observe_reports_no_drift_then_content_mode_and_absence() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let provider = FileProvider::new();
    let desired = attrs(json!({ "path": "motd", "content": "hello" }));
    let applied = provider
        .create(&ctx, "file", "resources.motd", &desired)
        .await
        .unwrap();
    let rec = recorded(&desired, &applied);
    let path = dir.path().join("motd");

    let clean = provider.observe(&ctx, &rec).await.unwrap();
    assert_eq!(clean, Observation::Present { drift: vec![] });

    std::fs::write(&path, "edited").unwrap();
    let edited = provider.observe(&ctx, &rec).await.unwrap();
    assert_eq!(
        edited,
        Observation::Present {
            drift: vec![Drift {
                attribute: "content".into(),
                reason: "content changed outside kiln".into()
            }]
        }
    );

    std::fs::write(&path, "hello").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let chmodded = provider.observe(&ctx, &rec).await.unwrap();
    assert_eq!(
        chmodded,
        Observation::Present {
            drift: vec![Drift {
                attribute: "mode".into(),
                reason: "mode changed outside kiln (now 0600)".into()
            }]
        }
    );

    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        provider.observe(&ctx, &rec).await.unwrap(),
        Observation::Absent
    );

    std::fs::create_dir(&path).unwrap();
    let Observation::Present { drift } = provider.observe(&ctx, &rec).await.unwrap() else {
        panic!("a directory is present");
    };
    assert_eq!(drift.len(), 1);
    assert_eq!(drift[0].attribute, "content");
    assert!(drift[0].reason.contains("directory"), "{}", drift[0].reason);
}

#[tokio::test]
async fn observe_does_not_need_clear_text_content() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let provider = FileProvider::new();
    let desired = attrs(json!({ "path": "secret", "content": "s3cr3t" }));
    let applied = provider
        .create(&ctx, "file", "resources.secret", &desired)
        .await
        .unwrap();
    // The engine records sensitive values as digests.
    let mut rec = recorded(&desired, &applied);
    rec.attributes.insert(
        "content".into(),
        json!(format!("sha256:{}", "0".repeat(64))),
    );
    assert_eq!(
        provider.observe(&ctx, &rec).await.unwrap(),
        Observation::Present { drift: vec![] }
    );
}

#[tokio::test]
async fn observe_of_unreadable_file_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let provider = FileProvider::new();
    let desired = attrs(json!({ "path": "locked/f", "content": "x" }));
    let applied = provider
        .create(&ctx, "file", "resources.f", &desired)
        .await
        .unwrap();
    let rec = recorded(&desired, &applied);
    let locked = dir.path().join("locked");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let result = provider.observe(&ctx, &rec).await;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Root ignores permission bits, so only check when the denial actually happened.
    if let Err(error) = result {
        let ProviderError::Failed { message } = error else {
            panic!("expected Failed, got {error:?}");
        };
        assert!(message.contains("locked/f"), "{message}");
    }
}

#[tokio::test]
async fn update_rewrites_content_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let provider = FileProvider::new();
    let first = attrs(json!({ "path": "conf", "content": "v1", "mode": "0644" }));
    let applied = provider
        .create(&ctx, "file", "resources.conf", &first)
        .await
        .unwrap();
    let rec = recorded(&first, &applied);

    let second = attrs(json!({ "path": "conf", "content": "version 2", "mode": "0600" }));
    let updated = provider.update(&ctx, &rec, &second).await.unwrap();
    let path = dir.path().join("conf");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "version 2");
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(updated.outputs["size"], json!(9));
    let rec2 = recorded(&second, &updated);
    assert_eq!(
        provider.observe(&ctx, &rec2).await.unwrap(),
        Observation::Present { drift: vec![] }
    );
}

#[tokio::test]
async fn update_to_a_new_path_writes_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let provider = FileProvider::new();
    let first = attrs(json!({ "path": "old", "content": "x" }));
    let applied = provider
        .create(&ctx, "file", "resources.f", &first)
        .await
        .unwrap();
    let rec = recorded(&first, &applied);
    let second = attrs(json!({ "path": "new", "content": "x" }));
    provider.update(&ctx, &rec, &second).await.unwrap();
    assert!(dir.path().join("new").is_file());
}

#[tokio::test]
async fn delete_is_idempotent_and_keeps_parents() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let provider = FileProvider::new();
    let desired = attrs(json!({ "path": "sub/f", "content": "x" }));
    let applied = provider
        .create(&ctx, "file", "resources.f", &desired)
        .await
        .unwrap();
    let rec = recorded(&desired, &applied);
    provider.delete(&ctx, &rec).await.unwrap();
    assert!(!dir.path().join("sub/f").exists());
    assert!(dir.path().join("sub").is_dir());
    provider.delete(&ctx, &rec).await.unwrap();
}

#[tokio::test]
async fn create_is_idempotent_and_replaces_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let provider = FileProvider::new();
    std::fs::write(dir.path().join("f"), "old").unwrap();
    let desired = attrs(json!({ "path": "f", "content": "new" }));
    provider
        .create(&ctx, "file", "resources.f", &desired)
        .await
        .unwrap();
    provider
        .create(&ctx, "file", "resources.f", &desired)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("f")).unwrap(),
        "new"
    );
}

#[tokio::test]
async fn bad_attributes_fail_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let provider = FileProvider::new();
    let bad_mode = attrs(json!({ "path": "f", "content": "x", "mode": "rw-r--r--" }));
    let error = provider
        .create(&ctx, "file", "resources.f", &bad_mode)
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Failed { .. }));
    let no_content = attrs(json!({ "path": "f" }));
    assert!(
        provider
            .create(&ctx, "file", "resources.f", &no_content)
            .await
            .is_err()
    );
    assert!(!dir.path().join("f").exists());
}
