//! DATABASE_SECRET_ARN against the real services: the password lives in
//! Secrets Manager (moto), PostgreSQL checks it (scram-sha-256), and a
//! rotation mid-run needs no restart.

use std::time::Duration;

use worker::db::{DatabaseSecret, Db, Status};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Password authentication for the worker's user; the tests' superuser
/// stays trusted.
const HBA: &str = "\\
local all all trust
host all postgres 127.0.0.1/32 trust
host all app 127.0.0.1/32 scram-sha-256
";

fn credentials(password: &str) -> String {
    format!(r#"{{"username":"app","password":"{password}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_read_again_without_a_restart() {
    let mut stack = Stack::start(Duration::from_secs(30)).await;
    stack.pg.reconfigure(&[], HBA, &[]).expect("password authentication");
    stack.sql(
        "CREATE ROLE app LOGIN PASSWORD 'first';
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app;",
    );
    let secrets = &stack.clients.secrets;
    let created = secrets
        .create_secret()
        .name("vidworker/database")
        .secret_string(credentials("first"))
        .send()
        .await
        .expect("secret");
    let arn = created.arn().expect("arn").to_owned();
    // DATABASE_URL without credentials: host, port, database.
    let mut base = url::Url::parse(&stack.database_url).expect("url");
    base.set_username("").expect("no user");
    let secret = DatabaseSecret::new(secrets.clone(), &arn, Some(base.to_string()));
    let db = Db::connect_with_secret(secret, 4).await.expect("the secret is read");
    assert!(
        !db.label().contains("first"),
        "the password stays out of messages: {}",
        db.label()
    );

    let first = stack.submit("gray-720p.mp4").await;
    let worker = stack.run(stack.runner(stack.settings(1), None, Some(db)).await).await;
    let rows = stack.wait_settled(&[first], LIMIT).await;
    assert_eq!(rows[0].status, Status::Processed, "{:?}", rows[0]);

    // Rotation, as Secrets Manager's rotation function does it: the
    // server's password changes, the secret follows, and open connections
    // end (a failover, or the pool's idle timeout).
    stack.sql("ALTER ROLE app PASSWORD 'second'");
    secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(credentials("second"))
        .send()
        .await
        .expect("rotate");
    stack.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'");

    let second = stack.submit("gray-720p.mp4").await;
    let rows = stack.wait_settled(&[second], LIMIT).await;
    worker.stop().await;
    assert_eq!(rows[0].status, Status::Processed, "{:?}", rows[0]);
    assert_eq!(rows[0].attempts, 1, "a refused login costs no attempt: {:?}", rows[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_secret_is_a_one_line_configuration_error() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let secrets = &stack.clients.secrets;
    let arn = secrets
        .create_secret()
        .name("vidworker/plain")
        .secret_string("hunter2")
        .send()
        .await
        .expect("secret")
        .arn()
        .expect("arn")
        .to_owned();
    let err = Db::connect_with_secret(DatabaseSecret::new(secrets.clone(), &arn, None), 1)
        .await
        .expect_err("not a URL, not JSON");
    assert_eq!(
        err.to_string(),
        format!("database secret {arn}: the secret is neither a postgres:// URL nor JSON with username and password")
    );
    assert_eq!(err.class(), worker::failure::FailureClass::Configuration);
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-AbCdEf";
    let err = Db::connect_with_secret(DatabaseSecret::new(secrets.clone(), missing, None), 1)
        .await
        .expect_err("no such secret");
    assert!(err.to_string().contains("ResourceNotFoundException"), "{err}");
    assert_eq!(err.class(), worker::failure::FailureClass::Configuration);
}
