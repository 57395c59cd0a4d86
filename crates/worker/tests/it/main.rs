//! The worker library against the real stack: each test starts its own
//! throwaway PostgreSQL cluster and moto server (S3, SQS, SNS) on free
//! ports, migrates and sets up the bucket and queues as production is set
//! up, and runs workers in process. One test binary, so the AWS SDK links
//! once. The `vidworker` crate's tests run the real binary against the
//! same support.

#![allow(clippy::expect_used, reason = "test code: a failure is a test failure")]

mod support;

mod crashes;
mod credentials;
mod faults;
mod outputs;
mod platform;
mod reliability;
mod sandbox;
mod schema;
mod settlement;
mod worker;
