//! The AWS clients, and the one way an AWS SDK error becomes a readable
//! line: the service's code and message when it answered, else the chain
//! of causes (a connection failure), without the raw HTTP response the
//! SDK's own formatting includes.

use std::error::Error;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::error::ProvideErrorMetadata;

/// An SDK error (or a service error enum) in one line.
pub(crate) fn describe<E: Error + ProvideErrorMetadata>(err: &E) -> String {
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => chain(err),
    }
}

/// An error and its causes in one line, each said once.
pub(crate) fn chain(err: &dyn Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&dyn Error> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The AWS clients, built once and shared.
#[derive(Clone, Debug)]
pub struct Clients {
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// SNS (completion events).
    pub sns: aws_sdk_sns::Client,
    /// Auto Scaling (the termination lifecycle action, scale-in
    /// protection, the instance's health).
    pub autoscaling: aws_sdk_autoscaling::Client,
    /// CloudFormation (the instance's success or failure signal).
    pub cloudformation: aws_sdk_cloudformation::Client,
    /// Secrets Manager (DATABASE_SECRET_ARN).
    pub secrets: aws_sdk_secretsmanager::Client,
    /// The region in use.
    pub region: Option<String>,
}

impl Clients {
    /// Clients configured like any AWS program: credentials, region and
    /// profile from the standard chain, `region` and `endpoint` overriding.
    pub async fn from_env(region: Option<&str>, endpoint: Option<&str>) -> Self {
        Self::build(region, endpoint, None).await
    }

    /// Clients with fixed credentials (tests, emulators).
    pub async fn with_credentials(region: &str, endpoint: &str, key_id: &str, secret: &str) -> Self {
        let creds = aws_sdk_s3::config::Credentials::new(key_id, secret, None, None, "vidworker-static");
        Self::build(Some(region), Some(endpoint), Some(creds)).await
    }

    async fn build(
        region: Option<&str>,
        endpoint: Option<&str>,
        credentials: Option<aws_sdk_s3::config::Credentials>,
    ) -> Self {
        // A stalled connection must not stall a job: fail and retry instead.
        // Attempts may take long enough for a 20 s long poll and an 8 MiB part.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(120))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_owned()));
        }
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        if let Some(c) = credentials {
            loader = loader.credentials_provider(c);
        }
        let sdk = loader.load().await;
        // With a custom endpoint (moto, MinIO, LocalStack) bucket names can't
        // be host names: use path-style addressing.
        let s3 = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(endpoint.is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some())
            .build();
        // A service-specific endpoint wins over the global one (as
        // AWS_ENDPOINT_URL_<SERVICE> does in the SDK's own configuration),
        // so an emulator of S3 and SQS can sit beside another of Auto Scaling.
        let own = |service: &str| std::env::var(format!("AWS_ENDPOINT_URL_{service}")).ok();
        let mut autoscaling_config = aws_sdk_autoscaling::config::Builder::from(&sdk);
        if let Some(url) = own("AUTO_SCALING") {
            autoscaling_config = autoscaling_config.endpoint_url(url);
        }
        let mut cloudformation_config = aws_sdk_cloudformation::config::Builder::from(&sdk);
        if let Some(url) = own("CLOUDFORMATION") {
            cloudformation_config = cloudformation_config.endpoint_url(url);
        }
        let mut secrets_config = aws_sdk_secretsmanager::config::Builder::from(&sdk);
        if let Some(url) = own("SECRETS_MANAGER") {
            secrets_config = secrets_config.endpoint_url(url);
        }
        Clients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            sns: aws_sdk_sns::Client::new(&sdk),
            autoscaling: aws_sdk_autoscaling::Client::from_conf(autoscaling_config.build()),
            cloudformation: aws_sdk_cloudformation::Client::from_conf(cloudformation_config.build()),
            secrets: aws_sdk_secretsmanager::Client::from_conf(secrets_config.build()),
            region: sdk.region().map(|r| r.to_string()),
        }
    }
}
