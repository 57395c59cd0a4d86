//! S3: the original is streamed to a local file (never whole in memory),
//! the rendition goes back with multipart upload when it is large.

use std::io;
use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration};
use tokio::io::AsyncWriteExt;

use crate::failure::FailureClass;

/// Objects at least this large are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// Size of each part (S3 wants at least 5 MiB but for the last).
pub const PART_SIZE: u64 = 8 << 20;

/// An S3 failure, with the object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist.
    #[error("s3://{bucket}/{key} does not exist")]
    NotFound {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// The object is larger than the input limit.
    #[error("s3://{bucket}/{key} is {size} bytes, more than the {limit} byte input limit")]
    TooLarge {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// S3 refused or could not be reached.
    #[error("cannot {action} s3://{bucket}/{key}: {message}")]
    Service {
        /// What was being done.
        action: &'static str,
        /// The bucket.
        bucket: String,
        /// The key, or empty for bucket operations.
        key: String,
        /// The SDK's full error text.
        message: String,
        /// S3's error code, when S3 answered.
        code: Option<String>,
    },
    /// The local side of a transfer failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Local {
        /// What was being done.
        action: &'static str,
        /// The local file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// Missing or oversized originals will not get better by retrying;
    /// permissions, a missing bucket or a KMS key need an operator; other
    /// service errors are outages; local disk errors are worth a retry.
    pub fn class(&self) -> FailureClass {
        match self {
            StorageError::NotFound { .. } | StorageError::TooLarge { .. } => FailureClass::Input,
            StorageError::Service { code: Some(code), .. } if is_configuration(code) => FailureClass::Configuration,
            StorageError::Service { .. } => FailureClass::Outage,
            StorageError::Local { .. } => FailureClass::Transient,
        }
    }
}

/// S3 error codes that mean the worker's set-up is wrong, not that S3 is
/// down: no retry helps until an operator acts.
fn is_configuration(code: &str) -> bool {
    const CODES: &[&str] = &[
        "AccessDenied",
        "AllAccessDisabled",
        "NoSuchBucket",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidBucketName",
        "AccountProblem",
        "InvalidObjectState",
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
    ];
    CODES.contains(&code) || code.starts_with("KMS.") || code.starts_with("Kms")
}

/// One bucket.
#[derive(Clone, Debug)]
pub struct Storage {
    client: Client,
    bucket: String,
}

impl Storage {
    /// A handle on `bucket`.
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Storage {
            client,
            bucket: bucket.into(),
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn service<E>(&self, action: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> StorageError
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        // Answers to HEAD requests have no body, so no error code: S3's
        // 403 there is an AccessDenied all the same.
        let forbidden = err.raw_response().is_some_and(|r| r.status().as_u16() == 403);
        let code = err
            .code()
            .map(str::to_owned)
            .or_else(|| forbidden.then(|| "AccessDenied".to_owned()));
        let message = match (err.code(), forbidden) {
            (None, true) => "AccessDenied (403 Forbidden)".to_owned(),
            _ => crate::aws::describe(&err),
        };
        StorageError::Service {
            action,
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            code,
            message,
        }
    }

    fn local_stream(&self, action: &'static str, key: &str, err: impl std::error::Error + 'static) -> StorageError {
        StorageError::Service {
            action,
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            code: None,
            message: crate::aws::chain(&err),
        }
    }

    fn not_found(&self, key: &str) -> StorageError {
        StorageError::NotFound {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
        }
    }

    /// Checks the bucket exists and we may list `prefix` in it. A listing
    /// rather than HeadBucket: the role's s3:ListBucket is limited to the
    /// worker's prefixes (an `s3:prefix` condition), which a HeadBucket
    /// request never satisfies.
    pub async fn check(&self, prefix: &str) -> Result<(), StorageError> {
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.service("reach bucket", prefix, e))
    }

    /// Creates the bucket if it does not exist yet.
    pub async fn create_bucket(&self, region: Option<&str>) -> Result<(), StorageError> {
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the one region that refuses a location constraint.
        if let Some(region) = region.filter(|r| *r != "us-east-1") {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) => Ok(()),
            Err(e) => Err(self.service("create bucket", "", e)),
        }
    }

    /// Checks that uploads under `prefix` are allowed, leaving nothing: a
    /// multipart upload is started (s3:PutObject) and aborted
    /// (s3:AbortMultipartUpload). No object, so no version or delete
    /// marker in a versioned bucket.
    pub async fn check_write(&self, prefix: &str) -> Result<(), StorageError> {
        let key = format!("{prefix}.vidworker-check");
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| self.service("start uploading", &key, e))?;
        let id = upload.upload_id().unwrap_or_default();
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(id)
            .send()
            .await
            .map_err(|e| self.service("abort uploading", &key, e))?;
        Ok(())
    }

    /// The size of an object.
    pub async fn size(&self, key: &str) -> Result<u64, StorageError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) => Ok(head.content_length().unwrap_or(0).max(0) as u64),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Err(self.not_found(key)),
            Err(e) => match self.service("look up", key, e) {
                denied @ StorageError::Service { .. } if denied.class() == FailureClass::Configuration => {
                    Err(self.missing_or(key, denied).await)
                }
                other => Err(other),
            },
        }
    }

    /// S3 answers 403, not 404, for a missing object unless the caller may
    /// list the bucket without conditions, and the worker's role may only
    /// list its own prefixes. So a denied lookup asks the listing (allowed
    /// under the key's prefix): a key that is not there is a missing
    /// upload, the video's fault; one that is there was really denied.
    async fn missing_or(&self, key: &str, denied: StorageError) -> StorageError {
        let listed = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(key)
            .max_keys(1)
            .send()
            .await;
        match listed {
            Ok(page) if !page.contents().iter().any(|o| o.key() == Some(key)) => self.not_found(key),
            _ => denied,
        }
    }

    /// Streams an object into `dest`, refusing it if it is (or turns out to
    /// be) larger than `limit` bytes. Returns its size.
    pub async fn download(&self, key: &str, dest: &Path, limit: u64) -> Result<u64, StorageError> {
        let too_large = |size| StorageError::TooLarge {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            size,
            limit,
        };
        let size = self.size(key).await?;
        if size > limit {
            return Err(too_large(size));
        }
        let object = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Err(self.not_found(key)),
            Err(e) => return Err(self.service("download", key, e)),
        };
        let local = |action, source| StorageError::Local {
            action,
            path: dest.to_owned(),
            source,
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(|e| local("create", e))?;
        let mut body = object.body;
        let mut written = 0u64;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| self.local_stream("download", key, e))?
        {
            written += chunk.len() as u64;
            // The object may have grown since the HEAD; the limit holds anyway.
            if written > limit {
                return Err(too_large(written));
            }
            file.write_all(&chunk).await.map_err(|e| local("write", e))?;
        }
        file.flush().await.map_err(|e| local("write", e))?;
        file.sync_all().await.map_err(|e| local("write", e))?;
        Ok(written)
    }

    /// Uploads a local file as `key` with this content type, in parts when
    /// it is large. The object appears whole or not at all.
    pub async fn upload(&self, path: &Path, key: &str, content_type: &str) -> Result<(), StorageError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|source| StorageError::Local {
                action: "read",
                path: path.to_owned(),
                source,
            })?
            .len();
        if size < MULTIPART_THRESHOLD {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| self.local_stream("read for upload", key, e))?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(content_type)
                .body(body)
                .send()
                .await
                .map_err(|e| self.service("upload", key, e))?;
            return Ok(());
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| self.service("start uploading", key, e))?;
        // Whatever stops this upload (an error, or the job being cancelled
        // and this future dropped), its parts must not stay behind: they
        // cost money and never expire without a lifecycle rule.
        let mut guard = AbortUpload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: upload.upload_id().unwrap_or_default().to_owned(),
            done: false,
        };
        self.upload_parts(path, key, &guard.upload_id, size).await?;
        guard.done = true;
        Ok(())
    }

    /// The keys under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.service("list", prefix, e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        }
        Ok(keys)
    }

    /// Deletes an object (no error if it is already gone).
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.service("delete", key, e))
    }

    async fn upload_parts(&self, path: &Path, key: &str, upload_id: &str, size: u64) -> Result<(), StorageError> {
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1;
        while offset < size {
            let length = PART_SIZE.min(size - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(length))
                .build()
                .await
                .map_err(|e| self.local_stream("read for upload", key, e))?;
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(body)
                .send()
                .await
                .map_err(|e| self.service("upload part of", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .build(),
            );
            offset += length;
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| self.service("finish uploading", key, e))?;
        Ok(())
    }

    /// The content type of an object, for tests and tools.
    pub async fn content_type(&self, key: &str) -> Result<Option<String>, StorageError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) => Ok(head.content_type().map(str::to_owned)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Err(self.not_found(key)),
            Err(e) => Err(self.service("look up", key, e)),
        }
    }
}

/// Aborts a multipart upload when dropped before it completed.
struct AbortUpload {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    done: bool,
}

impl Drop for AbortUpload {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let request = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id);
        let key = self.key.clone();
        runtime.spawn(async move {
            match request.send().await {
                Ok(_) => tracing::debug!(key, "aborted an unfinished multipart upload"),
                Err(e) => tracing::warn!(key, error = %crate::aws::describe(&e), "could not abort an unfinished multipart upload; the bucket's lifecycle rule removes it"),
            }
        });
    }
}
