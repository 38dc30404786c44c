//! One contract for both stores: the embedded SQLite file and PostgreSQL (for several
//! replicas). The PostgreSQL half needs a server: `TEST_PG_URL` names one (tests/run.sh starts
//! a throwaway one with tests/pg/start.sh); without it the suite starts its own from the
//! PostgreSQL installed on the machine. With none installed those tests fail, saying how to
//! get one, unless `TEST_PG_SKIP=1` skips them on purpose: a test that did nothing
//! must not count as passed by accident.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sluice::store::SqliteStore;
use sluice::store::{PgStore, PgStoreError};
use sluice_sdk::clock::unix_ms as unix_now_ms;
use sluice_sdk::outbox::{KvWrite, NewEntry, Outbox};
use sluice_sdk::KvStore;

/// The test server: `TEST_PG_URL`, or one this process started (stopped when it exits).
fn pg_server() -> Option<String> {
    static SERVER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var("TEST_PG_URL") {
                return Some(url);
            }
            if std::env::var("TEST_PG_SKIP").as_deref() == Ok("1") {
                return None;
            }
            Some(start_throwaway_server())
        })
        .clone()
}

/// tests/pg/start.sh from the installed binaries, and a watchdog that stops the server when this
/// test process ends, however it ends (its stdin is a pipe only this process holds).
fn start_throwaway_server() -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pg/start.sh");
    let out = Command::new("bash").arg(script).env("SLUICE_PG_NO_INSTALL", "1").output().expect("bash runs");
    assert!(
        out.status.success(),
        "the PostgreSQL tests need a server, and none could be started here ({}). Install PostgreSQL \
         (Debian: apt install postgresql), or run tests/run.sh (it installs one), or point TEST_PG_URL at a \
         server, or set TEST_PG_SKIP=1 to skip these tests on purpose.",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}='")).and_then(|v| v.strip_suffix('\'')))
            .map(str::to_owned)
            .expect("start.sh prints the variable")
    };
    let (url, stop) = (value("TEST_PG_URL"), value("TEST_PG_STOP"));
    let mut watchdog =
        Command::new("sh").arg("-c").arg(format!("read _; {stop}")).stdin(Stdio::piped()).spawn().expect("sh runs");
    // Kept open for the life of the process; leaked on purpose so nothing closes it earlier.
    let stdin = watchdog.stdin.take().expect("piped");
    std::mem::forget(stdin);
    std::mem::forget(watchdog);
    let _ = std::io::stderr().flush();
    url
}

/// A fresh database on the test server; `None` only when the operator skipped these tests
/// with `TEST_PG_SKIP=1`.
pub async fn pg_database() -> Option<String> {
    let Some(url) = pg_server() else {
        eprintln!("TEST_PG_SKIP=1: the PostgreSQL store is not tested in this run");
        return None;
    };
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("the test server answers");
    tokio::spawn(conn);
    let name = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let base = url.rsplit_once('/').unwrap().0;
    Some(format!("{base}/{name}"))
}

fn entry(id: &str, body: serde_json::Value) -> NewEntry {
    NewEntry { id: id.into(), kind: "report".into(), target: "/report".into(), body }
}

/// What both stores must do alike.
async fn contract(store: &(impl KvStore + Outbox)) {
    // Key/value records: replace, expire, delete, trim the soonest-expiring.
    store.put("ns", "a", &json!({"z": 1, "a": 2}), Duration::from_secs(60)).await.unwrap();
    store.put("ns", "a", &json!({"z": 3, "a": 4}), Duration::from_secs(60)).await.unwrap();
    store.put("ns", "gone", &json!(1), Duration::ZERO).await.unwrap();
    let got = store.get("ns", "a").await.unwrap().unwrap();
    assert_eq!(got.to_string(), r#"{"z":3,"a":4}"#, "values keep their key order");
    assert_eq!(store.get("ns", "gone").await.unwrap(), None);
    assert_eq!(store.get("other", "a").await.unwrap(), None);
    store.delete("ns", "a").await.unwrap();
    assert_eq!(store.get("ns", "a").await.unwrap(), None);
    // Written only over what was read: the components index, which replicas change.
    let (one, two) = (json!({"v": 1, "a": [1]}), json!({"v": 2, "a": [1, 2]}));
    let hour = Duration::from_secs(3600);
    assert!(store.put_if("ns", "i", None, &one, hour).await.unwrap(), "absent, as expected");
    assert!(!store.put_if("ns", "i", None, &two, hour).await.unwrap(), "there already");
    assert!(!store.put_if("ns", "i", Some(&two), &two, hour).await.unwrap(), "not what was read");
    assert_eq!(store.get("ns", "i").await.unwrap(), Some(one.clone()));
    let read = store.get("ns", "i").await.unwrap().unwrap();
    assert!(store.put_if("ns", "i", Some(&read), &two, hour).await.unwrap(), "what was read");
    assert_eq!(store.get("ns", "i").await.unwrap(), Some(two));
    store.put("ns", "gone-i", &one, Duration::ZERO).await.unwrap();
    assert!(store.put_if("ns", "gone-i", None, &one, hour).await.unwrap(), "expired reads as absent");
    for (i, ttl) in [300u64, 100, 200, 400].iter().enumerate() {
        store.put("bounded", &format!("k{i}"), &json!(i), Duration::from_secs(*ttl)).await.unwrap();
    }
    assert_eq!(store.trim("bounded", 2, u64::MAX).await.unwrap(), 2);
    assert_eq!(store.get("bounded", "k1").await.unwrap(), None);
    assert_eq!(store.get("bounded", "k3").await.unwrap(), Some(json!(3)));
    // A byte budget: values of 100 bytes, room for two and a half; the later expiries stay.
    for (i, ttl) in [300u64, 100, 200, 400].iter().enumerate() {
        store.put("sized", &format!("k{i}"), &json!("x".repeat(98)), Duration::from_secs(*ttl)).await.unwrap();
    }
    assert_eq!(store.trim("sized", 10, 250).await.unwrap(), 2);
    assert!(store.get("sized", "k3").await.unwrap().is_some() && store.get("sized", "k0").await.unwrap().is_some());
    assert_eq!(store.get("sized", "k2").await.unwrap(), None);

    // Entries and key/value writes in one step; enqueueing an id again changes nothing.
    let body = json!({"reqPayload": {"model": "m"}, "respPayload": {"id": "chatcmpl-1"}, "b": 1, "a": 0});
    store
        .enqueue(
            "q",
            vec![entry("e1", body.clone()), entry("e2", json!({"n": 2}))],
            vec![
                KvWrite::Put {
                    namespace: "dedupe".into(),
                    key: "k".into(),
                    value: json!(true),
                    ttl: Duration::from_secs(60),
                },
                KvWrite::Delete { namespace: "bounded".into(), key: "k3".into() },
            ],
        )
        .await
        .unwrap();
    store.enqueue("q", vec![entry("e1", json!({"other": true}))], vec![]).await.unwrap();
    assert_eq!(store.get("dedupe", "k").await.unwrap(), Some(json!(true)));
    assert_eq!(store.get("bounded", "k3").await.unwrap(), None);
    let stats = store.stats("q").await.unwrap();
    assert_eq!((stats.depth, stats.dead), (2, 0));
    assert!(stats.oldest_created_at_ms.is_some());

    let now = unix_now_ms() + 1;
    let due = store.due("q", now, 10).await.unwrap();
    assert_eq!(due.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e1", "e2"]);
    assert_eq!(due[0].body.to_string(), body.to_string(), "bodies are returned byte for byte");
    assert_eq!(due[0].attempts, 0);

    // Rescheduled, rewritten, buried, completed.
    store.retry_later("q", "e1", now + 60_000, Some(503), "HTTP 503").await.unwrap();
    store.replace_body("q", "e1", &json!({"smaller": true})).await.unwrap();
    store.dead_letter("q", "e2", Some(400), "HTTP 400: bad").await.unwrap();
    assert_eq!(store.next_due_at("q").await.unwrap(), Some(now + 60_000), "dead letters are not due");
    let dead = store.dead_letters("q", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id.as_str(), dead[0].last_status, dead[0].last_error.as_deref()),
        ("e2", Some(400), Some("HTTP 400: bad"))
    );
    assert_eq!(dead[0].attempts, 1, "the attempt that was refused is counted");
    // Recorded again (an outcome whose recording failed half-way is recorded again): once.
    let first = store.dead_letters("q", 10).await.unwrap()[0].dead_at_ms;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.dead_letter("q", "e2", Some(400), "HTTP 400: bad").await.unwrap();
    let again = &store.dead_letters("q", 10).await.unwrap()[0];
    assert_eq!((again.attempts, again.dead_at_ms), (1, first), "counted once, buried when first buried");
    let later = store.due("q", now + 60_001, 10).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!((later[0].attempts, later[0].last_status, &later[0].body), (1, Some(503), &json!({"smaller": true})));
    store.complete("q", "e1").await.unwrap();
    let stats = store.stats("q").await.unwrap();
    assert_eq!((stats.depth, stats.dead), (0, 1));
    assert_eq!(store.next_due_at("q").await.unwrap(), None);
}

#[tokio::test]
async fn the_embedded_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("store.sqlite3")).unwrap();
    contract(&store).await;
}

#[tokio::test]
async fn the_postgres_store_keeps_the_contract() {
    let Some(url) = pg_database().await else { return };
    let store = PgStore::connect(&url).await.unwrap();
    contract(&store).await;
    // A second start on the same database finds the schema in place.
    let again = PgStore::connect(&url).await.unwrap();
    assert_eq!(again.queues().await.unwrap().len(), 1);
}

/// Two replicas' workers on one queue: every entry is handed to exactly one of them.
#[tokio::test]
async fn two_workers_never_get_the_same_entry() {
    let Some(url) = pg_database().await else { return };
    let a = Arc::new(PgStore::connect(&url).await.unwrap());
    let b = Arc::new(PgStore::connect(&url).await.unwrap());
    let entries: Vec<NewEntry> = (0..300).map(|i| entry(&format!("r{i:03}"), json!({"i": i}))).collect();
    a.enqueue("q", entries, vec![]).await.unwrap();
    let handed: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let workers = [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().map(|store| {
        let handed = Arc::clone(&handed);
        tokio::spawn(async move {
            loop {
                let due = store.due("q", unix_now_ms(), 7).await.unwrap();
                if due.is_empty() {
                    return;
                }
                for e in due {
                    *handed.lock().unwrap().entry(e.id.clone()).or_default() += 1;
                    store.complete("q", &e.id).await.unwrap();
                }
            }
        })
    });
    for w in futures_util::future::join_all(workers).await {
        w.unwrap();
    }
    let handed = handed.lock().unwrap();
    assert_eq!(handed.len(), 300);
    assert!(
        handed.values().all(|&n| n == 1),
        "handed out twice: {:?}",
        handed.iter().filter(|(_, &n)| n > 1).collect::<Vec<_>>()
    );
}

/// A worker that dies holding entries: another gets them once the lease has run out, not before.
#[tokio::test]
async fn entries_of_a_dead_worker_come_back_after_the_lease() {
    let Some(url) = pg_database().await else { return };
    let dying = PgStore::connect_with_lease(&url, Duration::from_millis(400)).await.unwrap();
    let other = PgStore::connect_with_lease(&url, Duration::from_millis(400)).await.unwrap();
    dying.enqueue("q", vec![entry("held", json!({}))], vec![]).await.unwrap();
    assert_eq!(dying.due("q", unix_now_ms(), 10).await.unwrap().len(), 1);
    drop(dying);
    assert!(other.due("q", unix_now_ms(), 10).await.unwrap().is_empty(), "taken while leased");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let back = other.due("q", unix_now_ms(), 10).await.unwrap();
    assert_eq!(back.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["held"]);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(url) = pg_database().await else { return };
    drop(PgStore::connect(&url).await.unwrap());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.execute("INSERT INTO sluice_schema (version) VALUES (99)", &[]).await.unwrap();
    match PgStore::connect(&url).await {
        Err(e @ PgStoreError::NewerSchema { found: 99, .. }) => {
            assert!(e.to_string().contains("upgrade sluice"), "{e}")
        }
        Err(e) => panic!("wrong refusal: {e}"),
        Ok(_) => panic!("started against a newer schema"),
    }
}

/// Pointed at another application's database (tables of sluice's names, other columns): the
/// refusal says what the database said, and leaves that application's rows alone. It said
/// only "db error" (found by a red team).
#[tokio::test]
async fn another_application_s_database_is_refused_in_the_database_s_words() {
    let Some(url) = pg_database().await else { return };
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("CREATE TABLE kv (id SERIAL PRIMARY KEY, theirs TEXT); INSERT INTO kv (theirs) VALUES ('kept');")
        .await
        .unwrap();
    let e = PgStore::connect(&url).await.err().expect("refused").to_string();
    assert!(e.contains("relation \"kv\" already exists") && e.contains("a database of its own"), "{e}");
    let kept: String = client.query_one("SELECT theirs FROM kv", &[]).await.unwrap().get(0);
    assert_eq!(kept, "kept");
}

/// An operator whose replicas cannot reach the database learns where sluice tried, and why,
/// never the password.
#[tokio::test]
async fn connection_errors_say_where_and_why_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://sluice:hunter2@127.0.0.1:{port}/sluicedb");
    let e = PgStore::connect(&url).await.err().expect("nothing listens there").to_string();
    assert!(e.contains(&format!("at 127.0.0.1:{port} (database sluicedb, user sluice)")), "{e}");
    assert!(e.to_lowercase().contains("refused"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let e = PgStore::connect("postgres://sluice:p@ss/word@db/x").await.err().expect("not a URL").to_string();
    assert!(e.contains("percent-encoded") && !e.contains("p@ss/word"), "{e}");
    if let Some(base) = pg_server() {
        // A host name goes through sluice's own resolver (/etc/hosts here), not the C library's.
        let by_name = pg_database().await.unwrap().replace("127.0.0.1", "localhost");
        assert!(by_name.contains("@localhost:"), "{by_name}");
        PgStore::connect(&by_name).await.expect("the database by host name");
        let missing = format!("{}/no_such_database", base.rsplit_once('/').unwrap().0);
        let e = PgStore::connect(&missing).await.err().expect("no such database").to_string();
        assert!(e.contains("no_such_database") && e.contains("does not exist"), "{e}");
    }
}

/// Two replicas changing the components index at once: neither change is lost. Read, changed
/// and written back without a compare-and-set, the later write undid the other (a removal
/// came back; found by a red team).
#[tokio::test]
async fn concurrent_changes_of_the_components_index_are_all_kept() {
    use sluice::components::index;
    let Some(url) = pg_database().await else { return };
    let (a, b) = (PgStore::connect(&url).await.unwrap(), PgStore::connect(&url).await.unwrap());
    for round in 0..20 {
        let (x, y) = (format!("x{round}"), format!("y{round}"));
        let (first, second) = tokio::join!(
            index::insert(&a, &x, b"\0asm", "same", "x.wasm".into(), 1, None),
            index::insert(&b, &y, b"\0asm", "same", "y.wasm".into(), 1, None),
        );
        first.unwrap();
        second.unwrap();
    }
    let listed = index::read(&a).await.unwrap();
    assert_eq!(listed.components.len(), 40, "{:?}", listed.components.keys().collect::<Vec<_>>());
    assert_eq!(listed.version, 40);
}
