//! Compiled policies are cached on disk, and only entries this host wrote are trusted.

use model_pusher::policy::{CacheOutcome, CompiledCache, Limits, PolicyRuntime};

use crate::support::policies;

fn runtime(dir: &std::path::Path) -> PolicyRuntime {
    PolicyRuntime::new(Limits::default(), Some(CompiledCache::open(dir).unwrap())).unwrap()
}

#[test]
fn second_load_does_not_compile() {
    let dir = tempfile::tempdir().unwrap();
    let first = runtime(dir.path())
        .load(&policies::path("threshold"))
        .unwrap();
    assert_eq!(
        first.cache_outcome(),
        &CacheOutcome::Compiled { stored: true }
    );

    let second = runtime(dir.path())
        .load(&policies::path("threshold"))
        .unwrap();
    assert_eq!(second.cache_outcome(), &CacheOutcome::Hit);
    assert!(!second.cache_outcome().compiled());
}

#[test]
fn corrupt_entry_is_recompiled_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    runtime(dir.path())
        .load(&policies::path("threshold"))
        .unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "cwasm") {
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
        }
    }

    let policy = runtime(dir.path())
        .load(&policies::path("threshold"))
        .unwrap();
    assert!(
        matches!(policy.cache_outcome(), CacheOutcome::Recompiled { .. }),
        "{:?}",
        policy.cache_outcome()
    );
    let again = runtime(dir.path())
        .load(&policies::path("threshold"))
        .unwrap();
    assert_eq!(again.cache_outcome(), &CacheOutcome::Hit);
}

#[test]
fn entry_copied_from_another_cache_is_recompiled() {
    let theirs = tempfile::tempdir().unwrap();
    let ours = tempfile::tempdir().unwrap();
    runtime(theirs.path())
        .load(&policies::path("threshold"))
        .unwrap();
    runtime(ours.path())
        .load(&policies::path("multi-metric"))
        .unwrap();
    for entry in std::fs::read_dir(theirs.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "cwasm") {
            std::fs::copy(&path, ours.path().join(path.file_name().unwrap())).unwrap();
        }
    }

    let policy = runtime(ours.path())
        .load(&policies::path("threshold"))
        .unwrap();
    assert!(
        matches!(policy.cache_outcome(), CacheOutcome::Recompiled { .. }),
        "{:?}",
        policy.cache_outcome()
    );
}
