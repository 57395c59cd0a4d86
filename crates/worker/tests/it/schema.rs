//! The schema and the code agree: the stored states in Rust mirror the
//! migrations' CHECK constraints, read back from PostgreSQL's own catalogue
//! with `psql` (a value one side knows and the other does not is a row that
//! cannot be written or read), and a release runs on its successor's schema
//! (a rollback) but not on its predecessor's.

use std::collections::BTreeSet;
use std::time::Duration;

use worker::db::{Db, FailureKind, Phase, Status};

use crate::support::*;

/// The quoted values of a CHECK constraint, e.g. `CHECK ((status = ANY
/// (ARRAY['pending'::text, …])))` → {pending, …}.
fn allowed(stack: &Stack, constraint: &str) -> BTreeSet<String> {
    let def = stack.sql(&format!(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = '{constraint}'"
    ));
    assert!(def.starts_with("CHECK"), "{constraint}: {def:?}");
    def.split('\'').skip(1).step_by(2).map(str::to_owned).collect()
}

fn names<const N: usize>(all: [&'static str; N]) -> BTreeSet<String> {
    all.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_states_are_exactly_what_the_constraints_allow() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    assert_eq!(
        allowed(&stack, "videos_status_check"),
        names(Status::ALL.map(Status::as_str))
    );
    assert_eq!(
        allowed(&stack, "videos_phase_check"),
        names(Phase::ALL.map(Phase::as_str))
    );
    assert_eq!(
        allowed(&stack, "videos_failure_kind_check"),
        names(FailureKind::ALL.map(FailureKind::as_str))
    );
}

/// A migration the next release might ship: additive only (README
/// "Releasing": new tables, nullable or defaulted columns).
const NEXT_RELEASE_MIGRATION: &str = "\
ALTER TABLE videos ADD COLUMN reviewer_note text;
CREATE TABLE highlight_reels (id uuid PRIMARY KEY, video_id uuid NOT NULL REFERENCES videos (id));
";

/// The rollback case: the next release's migrations are applied (by its
/// `vidworker migrate`), then this release's worker runs again. It must
/// start, re-run its own migrations without complaint about the one it does
/// not know, and serve jobs, as a database user with DML rights only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_release_serves_jobs_on_the_next_release_schema_with_dml_rights_only() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let next = tempfile::tempdir().expect("dir");
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations")).expect("migrations") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, next.path().join(path.file_name().expect("name"))).expect("copy");
    }
    std::fs::write(
        next.path().join("29991231000001_highlight_reels.sql"),
        NEXT_RELEASE_MIGRATION,
    )
    .expect("write");
    let pool = sqlx::PgPool::connect(&stack.database_url).await.expect("connect");
    let next_release = sqlx::migrate::Migrator::new(next.path())
        .await
        .expect("next release's migrations");
    next_release.run(&pool).await.expect("the next release migrates");

    stack.sql(
        "CREATE ROLE app LOGIN;
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app;",
    );
    let mut app_url = url::Url::parse(&stack.database_url).expect("url");
    app_url.set_username("app").expect("user");
    let app = Db::connect_lazy(app_url.as_str(), 4).expect("pool");
    stack
        .db
        .migrate()
        .await
        .expect("this release's migrate ignores the newer migration");
    app.check_schema()
        .await
        .expect("this release's migrations are all applied");

    let id = stack.submit("gray-720p.mp4").await;
    let worker = stack
        .spawn_worker_via(stack.settings(1), None, Some(app_url.as_str()))
        .await;
    let rows = stack.wait_settled(&[id], Duration::from_secs(120)).await;
    worker.stop().await;
    assert_eq!(rows[0].status, Status::Processed, "{:?}", rows[0]);
    assert_eq!(
        stack.sql(&format!("SELECT status FROM videos WHERE id = '{id}'")),
        "processed"
    );
    assert_eq!(
        stack.sql("SELECT count(*) FROM information_schema.columns WHERE column_name = 'reviewer_note'"),
        "1",
        "the next release's column is still there"
    );
    let denied = stack.sql("SELECT has_schema_privilege('app', 'public', 'CREATE')");
    assert_eq!(denied, "f", "the worker's user cannot change the schema");
}

/// The other way round: a release whose migrations were not applied first
/// refuses to start, naming the migration and the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_refuses_to_start_on_a_schema_without_its_migrations() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let newest = worker::db::migrator().iter().last().expect("a migration").clone();
    stack.sql(&format!(
        "DELETE FROM _sqlx_migrations WHERE version = {}",
        newest.version
    ));
    let err = stack
        .runner(stack.settings(1), None, None)
        .await
        .start()
        .await
        .expect_err("the worker must not start");
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "lacks migration(s) {} ({}) that this release needs: run `vidworker migrate`",
            newest.version, newest.description
        )),
        "{message}"
    );
}
