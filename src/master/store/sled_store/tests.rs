//! The sled backend's own behaviour: records, scans, group commit, global entries and states.

use super::*;
use serde_json::json;

fn store() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

fn keys(
    store: &SledStore,
    t: &Tenant,
    scope: &str,
    prefix: &str,
    after: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    store
        .kv_scan(t, scope, prefix, after, &mut |r| {
            out.push(r.key);
            true
        })
        .unwrap();
    out
}

#[tokio::test]
async fn kv_round_trip_keeps_created_at() {
    let (_d, s) = store();
    let t = Tenant::new("user", "1");
    s.kv_set(&t, "default", "a", json!({"n": 1}), 10)
        .await
        .unwrap();
    let r = s.kv_set(&t, "default", "a", json!(2), 20).await.unwrap();
    assert_eq!((r.created_at, r.updated_at), (10, 20));
    assert_eq!(
        s.kv_get(&t, "default", "a").unwrap().unwrap().value,
        json!(2)
    );
    assert!(s.kv_delete(&t, "default", "a").await.unwrap());
    assert!(!s.kv_delete(&t, "default", "a").await.unwrap());
    assert_eq!(s.kv_get(&t, "default", "a").unwrap(), None);
}

#[tokio::test]
async fn scans_stay_inside_their_tenant_and_scope() {
    let (_d, s) = store();
    let a = Tenant::new("user", "1");
    // Tenant ids that are prefixes of each other, and zero bytes.
    let b = Tenant::new("user", "10");
    let c = Tenant::new("user", "1\0x");
    for (t, scope, key) in [
        (&a, "s", "k1"),
        (&a, "s", "k2"),
        (&a, "s", "x"),
        (&a, "s2", "k3"),
        (&a, "s\0", "k4"),
        (&b, "s", "k5"),
        (&c, "s", "k6"),
    ] {
        s.kv_set(t, scope, key, json!(1), 0).await.unwrap();
    }
    assert_eq!(keys(&s, &a, "s", "", None), ["k1", "k2", "x"]);
    assert_eq!(keys(&s, &a, "s", "k", None), ["k1", "k2"]);
    assert_eq!(keys(&s, &a, "s", "", Some("k1")), ["k2", "x"]);
    assert_eq!(keys(&s, &b, "s", "", None), ["k5"]);
    assert_eq!(s.kv_scopes(&a).unwrap(), ["s", "s\0", "s2"]);
    assert_eq!(s.kv_scopes(&c).unwrap(), ["s"]);
}

#[tokio::test]
async fn concurrent_writers_are_all_durable() {
    let (_d, s) = store();
    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let t = Tenant::new("user", i.to_string());
            s.kv_set(&t, "default", "k", json!(i), 0).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..64 {
        let t = Tenant::new("user", i.to_string());
        assert_eq!(
            s.kv_get(&t, "default", "k").unwrap().unwrap().value,
            json!(i)
        );
    }
}

#[tokio::test]
async fn global_entries_are_created_once() {
    let (_d, s) = store();
    let e = GlobalEntry {
        key: "list".into(),
        version: 1,
        scope: "lists".into(),
        value: json!([1]),
        public: true,
        owner: Some(Tenant::new("user", "1")),
        created_at: 0,
    };
    s.global_create(e.clone()).await.unwrap();
    assert!(matches!(
        s.global_create(e.clone()).await,
        Err(StoreError::Exists(_))
    ));
    assert_eq!(s.global_get("lists", "list", 1).unwrap(), Some(e));
    let other = Tenant::new("user", "2");
    assert_eq!(
        s.global_delete("lists", "list", 1, &other).await.unwrap(),
        GlobalDelete::NotOwner
    );
    assert!(s.global_get("lists", "list", 1).unwrap().is_some());
    let owner = Tenant::new("user", "1");
    assert_eq!(
        s.global_delete("lists", "list", 1, &owner).await.unwrap(),
        GlobalDelete::Deleted
    );
    assert_eq!(
        s.global_delete("lists", "list", 1, &owner).await.unwrap(),
        GlobalDelete::Missing
    );
}

#[tokio::test]
async fn tenant_states_round_trip() {
    let (_d, s) = store();
    let t = Tenant::new("guild", "1");
    let state = TenantState {
        events: Some(vec!["echo".into()]),
        plugins: None,
        data: json!({"lang": "en"}),
    };
    s.put_tenant_state(&t, &state).await.unwrap();
    assert_eq!(s.tenant_state(&t).unwrap(), Some(state.clone()));
    assert_eq!(s.tenant_states(&|_| true).unwrap()[0].state, state);
    // Another shard's record is not even decoded: a corrupt one there
    // does not fail this shard's load.
    s.states
        .insert(
            tenant_prefix(&Tenant::new("guild", "2")),
            b"\xc1 not msgpack".to_vec(),
        )
        .unwrap();
    assert!(s.tenant_states(&|_| true).is_err());
    let mine = s.tenant_states(&|x| *x == t).unwrap();
    assert_eq!(mine.len(), 1);
}

#[tokio::test]
async fn a_value_in_a_blob_file_is_synced_and_its_directory_too() {
    let (dir, store) = store();
    let t = Tenant::new("u", "1");
    // Past sled's inline limit (a quarter of a 512 KiB segment).
    let big = json!("x".repeat(200 * 1024));
    store.kv_set(&t, "s", "big", big.clone(), 1).await.unwrap();
    let files = super::sync::FileSync::open(&dir.path().join("store")).unwrap();
    files.sync().unwrap();
    let blobs: Vec<_> = std::fs::read_dir(dir.path().join("store/blobs"))
        .unwrap()
        .collect();
    assert_eq!(blobs.len(), 1, "the value went to a blob file");
    // Nothing new: nothing to do, and no error.
    files.sync().unwrap();
    assert_eq!(store.kv_get(&t, "s", "big").unwrap().unwrap().value, big);
}
