//! Flags and environment variables: the raw values of the two-step
//! configuration. Each `*Args` struct turns into the validated settings the
//! libraries take ([`RenditionSpec`], [`WorkerSettings`]); every default is
//! read from those types, so it is defined once.

use std::path::PathBuf;
use std::time::Duration;

use processor::{Card, CardContent, Corner, Fit, Image, Limits, MAX_CARD, RenditionSpec, Watermark};
use worker::aws::Clients;
use worker::completion::Publisher;
use worker::config::{ConfigError, WorkerSettings};
use worker::db::{DatabaseSecret, Db, Tls};
use worker::termination::TerminationSettings;

use crate::isolation::IsolationArgs;
use crate::ladder::LadderArgs;

/// Port 9464: the one commonly used by Prometheus exporters of
/// OpenTelemetry-style services, free of the usual web ports. Loopback
/// only by default: the instance's own agent and health checks reach it
/// there; exposing it to the network (`0.0.0.0:9464`, as the container
/// image does) is a choice an operator makes, with a firewall beside it.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// `METRICS_ADDR`: an address, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<std::net::SocketAddr>);

fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s.is_empty() || s.eq_ignore_ascii_case("off") {
        return Ok(MetricsAddr(None));
    }
    s.parse()
        .map(|a| MetricsAddr(Some(a)))
        .map_err(|e| format!("{s:?} is not ADDR:PORT or off ({e})"))
}

fn spec() -> RenditionSpec {
    RenditionSpec::default()
}

fn watermark() -> Watermark {
    Watermark::default()
}

fn worker() -> WorkerSettings {
    WorkerSettings::default()
}

/// How the picture is fitted into the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FitArg {
    /// Black bars, nothing cropped.
    Pad,
    /// Fill the frame, cropping what overflows.
    Fill,
}

/// A corner of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CornerArg {
    /// Top left.
    TopLeft,
    /// Top right.
    TopRight,
    /// Bottom left.
    BottomLeft,
    /// Bottom right.
    BottomRight,
}

/// Every rendition option, shared by `vidworker process` and `vidworker run`.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Rendition")]
pub struct RenditionArgs {
    /// Longest main video in seconds (cards come on top).
    #[arg(long, env = "RENDITION_MAX_DURATION", default_value_t = spec().max_duration.as_secs_f64(), value_name = "SECONDS")]
    pub max_duration: f64,
    /// Output width in pixels (even).
    #[arg(long, env = "RENDITION_WIDTH", default_value_t = spec().width)]
    pub width: u32,
    /// Output height in pixels (even).
    #[arg(long, env = "RENDITION_HEIGHT", default_value_t = spec().height)]
    pub height: u32,
    /// `pad`: black bars, nothing cropped; `fill`: crop to fill the frame.
    #[arg(long, env = "RENDITION_FIT", value_enum, default_value_t = FitArg::from(spec().fit))]
    pub fit: FitArg,
    /// A PNG to use as watermark instead of the built-in league logo.
    #[arg(
        long,
        env = "RENDITION_WATERMARK",
        value_name = "PNG",
        conflicts_with = "no_watermark"
    )]
    pub watermark: Option<PathBuf>,
    /// No watermark at all.
    #[arg(long, env = "RENDITION_NO_WATERMARK")]
    pub no_watermark: bool,
    /// Corner of the watermark.
    #[arg(long, env = "RENDITION_WATERMARK_CORNER", value_enum, default_value_t = CornerArg::from(watermark().corner))]
    pub watermark_corner: CornerArg,
    /// Distance of the watermark from the frame's edges, in output pixels.
    #[arg(
        long,
        env = "RENDITION_WATERMARK_MARGIN",
        default_value_t = watermark().margin,
        value_name = "PIXELS"
    )]
    pub watermark_margin: u32,
    /// Width of the watermark as a fraction of the frame width.
    #[arg(
        long,
        env = "RENDITION_WATERMARK_WIDTH",
        default_value_t = watermark().width_fraction,
        value_name = "FRACTION"
    )]
    pub watermark_width: f32,
    /// Opacity of the watermark, 0 to 1.
    #[arg(long, env = "RENDITION_WATERMARK_OPACITY", default_value_t = watermark().opacity)]
    pub watermark_opacity: f32,
    /// Intro card: `logo` (the league logo on black), a `.png` file, or a
    /// short video clip.
    #[arg(long, env = "RENDITION_INTRO", value_name = "logo|PNG|CLIP")]
    pub intro: Option<String>,
    /// Outro card: `logo`, a `.png` file, or a short video clip.
    #[arg(long, env = "RENDITION_OUTRO", value_name = "logo|PNG|CLIP")]
    pub outro: Option<String>,
    /// Intro length in seconds (at most 2.5; intro + outro at most 5).
    #[arg(
        long,
        env = "RENDITION_INTRO_DURATION",
        default_value_t = MAX_CARD.as_secs_f64(),
        value_name = "SECONDS"
    )]
    pub intro_duration: f64,
    /// Outro length in seconds (at most 2.5; intro + outro at most 5).
    #[arg(
        long,
        env = "RENDITION_OUTRO_DURATION",
        default_value_t = MAX_CARD.as_secs_f64(),
        value_name = "SECONDS"
    )]
    pub outro_duration: f64,
    /// Keep the audio, re-encoded as AAC stereo 128 kb/s.
    #[arg(long, env = "RENDITION_KEEP_AUDIO")]
    pub keep_audio: bool,
    /// Write a poster beside the rendition: a 1280x720 JPEG of one of its
    /// frames (past any black opening or fade) [default; RENDITION_POSTER=false
    /// turns it off].
    #[arg(long, env = "RENDITION_POSTER", default_value_t = spec().poster, action = clap::ArgAction::SetTrue, overrides_with = "no_poster")]
    pub poster: bool,
    /// No poster.
    #[arg(long, overrides_with = "poster")]
    pub no_poster: bool,
    /// libx264 preset, `ultrafast` to `veryslow`.
    #[arg(long, env = "RENDITION_PRESET", default_value_t = spec().preset)]
    pub preset: String,
    /// libx264 constant rate factor, 0 to 51 (lower is better and larger).
    #[arg(long, env = "RENDITION_CRF", default_value_t = spec().crf)]
    pub crf: u8,
    /// Further libx264 tuning over the preset, as `key=value:key=value`
    /// (subme, me, ref, trellis, b-adapt, rc-lookahead, aq-mode, psy-rd,
    /// …; never keyframes, rate control or the profile).
    #[arg(long, env = "RENDITION_X264_PARAMS", default_value_t = spec().x264_params, value_name = "PARAMS")]
    pub x264_params: String,
    /// Highest output frame rate; faster sources are reduced by an integer
    /// factor (59.94 → 29.97).
    #[arg(long, env = "RENDITION_MAX_FPS", default_value_t = spec().max_fps)]
    pub max_fps: u32,
    /// Longest interval between keyframes, in seconds.
    #[arg(
        long,
        env = "RENDITION_KEYFRAME_INTERVAL",
        default_value_t = spec().keyframe_interval.as_secs_f64(),
        value_name = "SECONDS"
    )]
    pub keyframe_interval: f64,
    /// Cores one job may use (x264 gets 1.5 threads per core); 0: all of
    /// them for `process`, the job's share of them for `run`.
    #[arg(long, env = "RENDITION_THREADS", default_value_t = spec().threads)]
    pub threads: u32,
    #[command(flatten)]
    pub ladder: LadderArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Resource limits for untrusted inputs.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Input limits")]
pub struct LimitArgs {
    /// Largest input accepted, in bytes.
    #[arg(long, env = "INPUT_MAX_BYTES", default_value_t = Limits::default().max_input_bytes, value_name = "BYTES")]
    pub max_input_bytes: u64,
    /// Largest picture accepted, in pixels per frame.
    #[arg(long, env = "INPUT_MAX_PIXELS", default_value_t = Limits::default().max_pixels, value_name = "PIXELS")]
    pub max_pixels: u64,
    /// Most streams an input may have.
    #[arg(long, env = "INPUT_MAX_STREAMS", default_value_t = Limits::default().max_streams)]
    pub max_streams: u32,
    /// Wall-clock limit for one transcode, in seconds; 0 for none.
    #[arg(long, env = "JOB_TIMEOUT", default_value_t = Limits::default().timeout.map_or(0, |t| t.as_secs()), value_name = "SECONDS")]
    pub job_timeout: u64,
    /// How many bytes FFmpeg may read to identify an input's streams.
    #[arg(long, env = "INPUT_PROBE_BYTES", default_value_t = Limits::default().probe_bytes, value_name = "BYTES")]
    pub probe_bytes: u64,
}

impl LimitArgs {
    /// The validated limits.
    pub fn to_limits(&self) -> Limits {
        Limits {
            max_input_bytes: self.max_input_bytes,
            max_pixels: self.max_pixels,
            max_streams: self.max_streams,
            timeout: (self.job_timeout > 0).then(|| Duration::from_secs(self.job_timeout)),
            probe_bytes: self.probe_bytes,
            ..Limits::default()
        }
    }
}

fn seconds(name: &str, v: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(v).map_err(|_| ConfigError(format!("{name} {v} is not a number of seconds")))
}

fn card(name: &str, arg: &Option<String>, secs: f64) -> Result<Option<Card>, ConfigError> {
    let Some(arg) = arg else { return Ok(None) };
    let content = if arg == "logo" {
        CardContent::Image(Image::Logo)
    } else {
        let path = PathBuf::from(arg);
        if !path.is_file() {
            return Err(ConfigError(format!(
                "{name} {arg:?} is neither `logo` nor a readable file"
            )));
        }
        // A PNG is a still card; anything else is treated as a clip.
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
            CardContent::Image(Image::Png(path))
        } else {
            CardContent::Clip(path)
        }
    };
    Ok(Some(Card {
        content,
        duration: seconds(&format!("{name} duration"), secs)?,
    }))
}

impl RenditionArgs {
    /// The validated rendition spec.
    pub fn to_spec(&self) -> Result<RenditionSpec, ConfigError> {
        let watermark = if self.no_watermark {
            None
        } else {
            Some(Watermark {
                image: self.watermark.clone().map_or(Image::Logo, Image::Png),
                corner: match self.watermark_corner {
                    CornerArg::TopLeft => Corner::TopLeft,
                    CornerArg::TopRight => Corner::TopRight,
                    CornerArg::BottomLeft => Corner::BottomLeft,
                    CornerArg::BottomRight => Corner::BottomRight,
                },
                margin: self.watermark_margin,
                width_fraction: self.watermark_width,
                opacity: self.watermark_opacity,
            })
        };
        if let Some(Watermark {
            image: Image::Png(p), ..
        }) = &watermark
            && !p.is_file()
        {
            return Err(ConfigError(format!("watermark {} is not a readable file", p.display())));
        }
        let mut spec = RenditionSpec {
            max_duration: seconds("max duration", self.max_duration)?,
            width: self.width,
            height: self.height,
            fit: match self.fit {
                FitArg::Pad => Fit::Pad,
                FitArg::Fill => Fit::Fill,
            },
            watermark,
            intro: card("intro", &self.intro, self.intro_duration)?,
            outro: card("outro", &self.outro, self.outro_duration)?,
            keep_audio: self.keep_audio,
            poster: self.poster && !self.no_poster,
            preset: self.preset.clone(),
            crf: self.crf,
            x264_params: self.x264_params.clone(),
            max_fps: self.max_fps,
            keyframe_interval: seconds("keyframe interval", self.keyframe_interval)?,
            threads: self.threads,
            limits: self.limits.to_limits(),
            ..RenditionSpec::default()
        };
        self.ladder.apply(&mut spec)?;
        spec.validate()?;
        Ok(spec)
    }
}

/// Where the database is.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Database")]
pub struct DbArgs {
    /// PostgreSQL URL, e.g.
    /// `postgres://user:password@host:5432/db?sslmode=verify-full&sslrootcert=/etc/vidworker/rds-ca.pem`.
    /// With DATABASE_SECRET_ARN, the URL without credentials (host,
    /// database, TLS), or nothing when the secret names the host.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        required_unless_present = "database_secret_arn"
    )]
    pub database_url: Option<String>,
    /// A Secrets Manager secret holding the credentials: a whole URL, or
    /// RDS's JSON (`username`, `password`, optionally `host`, `port`,
    /// `dbname`). Read at start and again when the server refuses the
    /// credentials, so a rotation needs no restart.
    #[arg(long, env = "DATABASE_SECRET_ARN")]
    pub database_secret_arn: Option<String>,
    /// `insecure`: accept a URL that crosses a network without verifying
    /// the server (sslmode below verify-full), with a warning. Otherwise
    /// such a URL is refused; a server on this machine needs no TLS.
    #[arg(long, env = "DATABASE_TLS", value_parser = ["insecure"])]
    pub database_tls: Option<String>,
    /// Seconds one database call may take, connecting included, before
    /// the worker gives up on it (and retries, if the database is only
    /// slow or failing over).
    #[arg(long, env = "DATABASE_CALL_TIMEOUT", default_value_t = worker::db::CALL_TIMEOUT.as_secs())]
    pub database_call_timeout: u64,
}

impl DbArgs {
    /// A pool of up to `max_connections` (its URL read from the secret,
    /// when there is one, through `clients`, or clients from the standard
    /// AWS environment for commands that have none), once the URL's TLS is
    /// safe, or said to be insecure on purpose.
    pub async fn connect(&self, max_connections: u32, clients: Option<&Clients>) -> anyhow::Result<Db> {
        if self.database_call_timeout == 0 {
            anyhow::bail!("DATABASE_CALL_TIMEOUT must be at least 1 s");
        }
        // An empty variable (`DATABASE_URL=` in an env file) is no value.
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let db = match (given(&self.database_secret_arn), given(&self.database_url)) {
            (Some(arn), base) => {
                let secrets = match clients {
                    Some(clients) => clients.secrets.clone(),
                    None => Clients::from_env(None, None).await.secrets,
                };
                let secret = DatabaseSecret::new(secrets, arn, base);
                Db::connect_with_secret(secret, max_connections).await?
            }
            (None, Some(url)) => Db::connect_lazy(&url, max_connections)?,
            (None, None) => anyhow::bail!("DATABASE_URL is not set (nor DATABASE_SECRET_ARN)"),
        };
        // The label keeps sslmode and sslrootcert (only a password is hidden).
        if let Tls::Unverified { sslmode } = worker::db::tls_of(db.label()) {
            let url = db.label();
            if self.database_tls.is_none() {
                anyhow::bail!(
                    "DATABASE_URL {url}: sslmode={sslmode} does not verify the server across the network: use \
                     sslmode=verify-full with sslrootcert, or set DATABASE_TLS=insecure to accept it"
                );
            }
            tracing::warn!(
                database = %url,
                sslmode,
                "DATABASE_TLS=insecure: the database connection does not verify the server; anyone on the path \
                 can read it or pose as the database"
            );
        }
        Ok(db.with_call_timeout(std::time::Duration::from_secs(self.database_call_timeout)))
    }
}

/// Where S3 and SQS are.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "AWS")]
pub struct AwsArgs {
    /// URL of the job queue.
    #[arg(long, env = "SQS_QUEUE_URL")]
    pub queue_url: String,
    /// Bucket holding originals and renditions.
    #[arg(long, env = "S3_BUCKET")]
    pub bucket: String,
    /// AWS region (also read from the usual AWS configuration).
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// An S3/SQS-compatible endpoint (LocalStack, moto, MinIO). S3 then uses
    /// path-style addressing.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
}

impl AwsArgs {
    /// The AWS clients, configured from these values and the standard AWS
    /// environment (credentials chain, profiles).
    pub async fn clients(&self) -> Clients {
        Clients::from_env(self.region.as_deref(), self.endpoint_url.as_deref()).await
    }
}

/// Everything `vidworker run` takes.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Apply the database migrations before starting.
    #[arg(long, env = "RUN_MIGRATIONS", help_heading = "Worker")]
    pub migrate: bool,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub termination: TerminationArgs,
    #[command(flatten)]
    pub rendition: RenditionArgs,
}

/// What to do when EC2 says the instance is going away.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "EC2 termination")]
pub struct TerminationArgs {
    /// The Auto Scaling group, to complete its termination lifecycle action
    /// once drained.
    #[arg(long, env = "AUTOSCALING_GROUP_NAME")]
    pub autoscaling_group_name: Option<String>,
    /// The group's termination lifecycle hook.
    #[arg(long, env = "LIFECYCLE_HOOK_NAME")]
    pub lifecycle_hook_name: Option<String>,
    /// How long the hook holds a terminating instance (its heartbeat
    /// timeout), in seconds: the drain must end before it.
    #[arg(long, env = "LIFECYCLE_TIMEOUT", default_value_t = TerminationSettings::default().lifecycle_timeout.as_secs(), value_name = "SECONDS")]
    pub lifecycle_timeout: u64,
    /// Seconds an idle worker keeps its instance protected from scale-in
    /// after its last job (the protection needs AUTOSCALING_GROUP_NAME).
    #[arg(long, env = "SCALE_IN_PROTECTION_IDLE", default_value_t = TerminationSettings::default().protection_idle.as_secs(), value_name = "SECONDS")]
    pub scale_in_protection_idle: u64,
    /// Seconds between two looks at the instance metadata.
    #[arg(long, env = "TERMINATION_POLL", default_value_t = TerminationSettings::default().poll.as_secs(), value_name = "SECONDS", hide = true)]
    pub termination_poll: u64,
}

impl TerminationArgs {
    /// The watcher's settings.
    pub fn to_settings(&self) -> TerminationSettings {
        TerminationSettings {
            poll: Duration::from_secs(self.termination_poll.max(1)),
            lifecycle_timeout: Duration::from_secs(self.lifecycle_timeout),
            group: self.autoscaling_group_name.clone(),
            hook: self.lifecycle_hook_name.clone(),
            protection_idle: Duration::from_secs(self.scale_in_protection_idle),
        }
    }
}

/// How the worker runs jobs.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Worker")]
pub struct WorkerArgs {
    /// Jobs transcoding at once [default: one per core, at most one per
    /// MEMORY_PER_JOB of memory, at least 1]. 1 gives a lone job every
    /// core.
    #[arg(long, env = "WORKER_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Jobs taken beyond those transcoding: they download while the others
    /// transcode and upload while the next one does (0 for none).
    #[arg(long, env = "WORKER_PREFETCH", default_value_t = worker().prefetch)]
    pub prefetch: usize,
    /// Seconds a received message stays invisible; extended every third of
    /// it while its job runs.
    #[arg(long, env = "VISIBILITY_TIMEOUT", default_value_t = worker().visibility_timeout.as_secs(), value_name = "SECONDS")]
    pub visibility_timeout: u64,
    /// Attempts (counted in the row; shutdowns and configuration errors do
    /// not count) after which a video that keeps failing is marked failed
    /// and its message moved to the dead-letter queue. Keep the queue's
    /// maxReceiveCount well above it.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = worker().max_attempts)]
    pub max_attempts: u32,
    /// Long-polling wait, in seconds (0 to 20).
    #[arg(long, env = "RECEIVE_WAIT_SECONDS", default_value_t = worker().receive_wait.as_secs(), value_name = "SECONDS")]
    pub receive_wait: u64,
    /// Seconds running jobs get to finish after SIGTERM before they are
    /// cancelled and handed back.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value_t = worker().shutdown_grace.as_secs(), value_name = "SECONDS")]
    pub shutdown_grace: u64,
    /// First retry delay in seconds after a transient failure; doubles with
    /// every receive, up to 15 minutes.
    #[arg(long, env = "RETRY_BACKOFF", default_value_t = worker().retry_backoff.as_secs(), value_name = "SECONDS")]
    pub retry_backoff: u64,
    /// Seconds a job's message waits after a configuration error
    /// (permissions, a missing bucket or key, the database schema): the job
    /// is handed back without counting the attempt.
    #[arg(long, env = "CONFIGURATION_DELAY", default_value_t = worker().configuration_delay.as_secs(), value_name = "SECONDS")]
    pub configuration_delay: u64,
    /// Key prefix of originals; a row pointing elsewhere is refused. Empty
    /// to allow any key.
    #[arg(long, env = "ORIGINALS_PREFIX", default_value_t = worker().originals_prefix)]
    pub originals_prefix: String,
    /// Key prefix of renditions: `<prefix><id>.mp4`.
    #[arg(long, env = "PROCESSED_PREFIX", default_value_t = worker().processed_prefix)]
    pub processed_prefix: String,
    /// Directory for each job's private working directory [default: the
    /// system's temporary directory].
    #[arg(long, env = "WORKER_TEMP_DIR")]
    pub temp_dir: Option<PathBuf>,
    /// How long a job waits for S3 or PostgreSQL to come back before it is
    /// handed back for a later retry, in seconds.
    #[arg(long, env = "OUTAGE_PATIENCE", default_value_t = worker().outage_patience.as_secs(), value_name = "SECONDS")]
    pub outage_patience: u64,
    /// This worker's name in the database's `claimed_by` [default:
    /// hostname:pid].
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,
    /// How long a message for a video the database does not know yet is
    /// retried before it goes to the dead-letter queue, in seconds.
    #[arg(long, env = "UNKNOWN_VIDEO_PATIENCE", default_value_t = worker().unknown_video_patience.as_secs(), value_name = "SECONDS")]
    pub unknown_video_patience: u64,
    /// Start even if the database has no videos while the queue has
    /// messages (otherwise refused: most likely the wrong DATABASE_URL).
    #[arg(long, env = "ALLOW_EMPTY_DATABASE")]
    pub allow_empty_database: bool,
    /// Where /metrics, /healthz and /readyz are served (`off` for nowhere).
    #[arg(long, env = "METRICS_ADDR", default_value = DEFAULT_METRICS_ADDR, value_parser = parse_metrics_addr, value_name = "ADDR:PORT|off")]
    pub metrics_addr: MetricsAddr,
    /// At most one progress write per job this often, in seconds.
    #[arg(long, env = "PROGRESS_INTERVAL", default_value_t = worker().progress_interval.as_secs(), value_name = "SECONDS")]
    pub progress_interval: u64,
    /// Dollars per vCPU-hour, to price each job's CPU seconds in its cost
    /// (the row's `cost`, the completion event): the instance's hourly
    /// price over its vCPUs, e.g. a c7i.large's on-demand price / 2.
    /// Unset: CPU seconds only.
    #[arg(long, env = "COST_PER_VCPU_HOUR", value_name = "DOLLARS", value_parser = parse_price)]
    pub cost_per_vcpu_hour: Option<f64>,
    #[command(flatten)]
    pub isolation: IsolationArgs,
    #[command(flatten)]
    pub reconcile: ReconcileArgs,
    #[command(flatten)]
    pub events: EventsArgs,
}

/// Where completion events go.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Completion events")]
pub struct EventsArgs {
    /// An SNS topic that gets a `video.processed` or `video.failed` event
    /// for every final outcome.
    #[arg(long, env = "EVENTS_TOPIC_ARN", value_name = "ARN")]
    pub events_topic_arn: Option<String>,
    /// An SQS queue that gets the same events (with or instead of the
    /// topic).
    #[arg(long, env = "EVENTS_QUEUE_URL", value_name = "URL")]
    pub events_queue_url: Option<String>,
    /// The events' schema: 2 lists every output and the job's cost; 1 is
    /// the older payload, for consumers not yet moved.
    #[arg(long, env = "EVENTS_VERSION", default_value_t = worker::completion::LATEST_VERSION,
          value_parser = clap::value_parser!(u32).range(i64::from(*worker::completion::VERSIONS.start())..=i64::from(*worker::completion::VERSIONS.end())))]
    pub events_version: u32,
}

impl EventsArgs {
    /// The publisher of these destinations (one that publishes nowhere if
    /// neither is set).
    pub fn publisher(&self, clients: &Clients) -> Publisher {
        Publisher::new(
            clients,
            self.events_topic_arn.as_deref().filter(|s| !s.is_empty()),
            self.events_queue_url.as_deref().filter(|s| !s.is_empty()),
        )
        .with_version(self.events_version)
    }
}

/// How stranded and abandoned videos are repaired.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Reconciler")]
pub struct ReconcileArgs {
    /// Seconds between two reconciliation passes inside `run` (one worker
    /// of the fleet at a time); 0 turns it off.
    #[arg(long, env = "RECONCILE_INTERVAL", default_value_t = worker().reconcile_interval.as_secs(), value_name = "SECONDS")]
    pub reconcile_interval: u64,
    /// Seconds a pending video may go untouched before its message is sent
    /// again.
    #[arg(long, env = "STRANDED_AFTER", default_value_t = worker().stranded_after.as_secs(), value_name = "SECONDS")]
    pub stranded_after: u64,
    /// Re-sends of a stranded video before it is marked failed.
    #[arg(long, env = "MAX_RESENDS", default_value_t = worker().max_resends)]
    pub max_resends: u32,
}

impl WorkerArgs {
    /// The validated worker settings; `spec` is the rendition to produce.
    pub fn to_settings(&self, spec: RenditionSpec) -> Result<WorkerSettings, ConfigError> {
        let defaults = worker();
        WorkerSettings {
            worker_id: self.worker_id.clone().unwrap_or(defaults.worker_id),
            concurrency: self
                .concurrency
                .unwrap_or_else(|| worker::config::concurrency_for_memory(self.isolation.memory_per_job)),
            prefetch: self.prefetch,
            visibility_timeout: Duration::from_secs(self.visibility_timeout),
            max_attempts: self.max_attempts,
            receive_wait: Duration::from_secs(self.receive_wait),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            retry_backoff: Duration::from_secs(self.retry_backoff),
            outage_patience: Duration::from_secs(self.outage_patience),
            configuration_delay: Duration::from_secs(self.configuration_delay),
            originals_prefix: self.originals_prefix.clone(),
            processed_prefix: self.processed_prefix.clone(),
            temp_dir: self.temp_dir.clone().unwrap_or(defaults.temp_dir),
            unknown_video_patience: Duration::from_secs(self.unknown_video_patience),
            reconcile_interval: Duration::from_secs(self.reconcile.reconcile_interval),
            stranded_after: Duration::from_secs(self.reconcile.stranded_after),
            max_resends: self.reconcile.max_resends,
            allow_empty_database: self.allow_empty_database,
            metrics_addr: self.metrics_addr.0,
            progress_interval: Duration::from_secs(self.progress_interval),
            isolation: self.isolation.to_isolation(),
            vcpu_hour_price: self.cost_per_vcpu_hour,
            spec,
        }
        .validated()
    }
}

/// A price: a finite number of dollars, zero or more.
fn parse_price(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if p.is_finite() && p >= 0.0 => Ok(p),
        _ => Err(format!("{s:?} is not a price in dollars (for example 0.0446)")),
    }
}

impl From<Fit> for FitArg {
    fn from(fit: Fit) -> Self {
        match fit {
            Fit::Pad => FitArg::Pad,
            Fit::Fill => FitArg::Fill,
        }
    }
}

impl From<Corner> for CornerArg {
    fn from(corner: Corner) -> Self {
        match corner {
            Corner::TopLeft => CornerArg::TopLeft,
            Corner::TopRight => CornerArg::TopRight,
            Corner::BottomLeft => CornerArg::BottomLeft,
            Corner::BottomRight => CornerArg::BottomRight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        r: RenditionArgs,
    }

    #[test]
    fn defaults_give_the_product_spec() {
        let t = T::try_parse_from(["t"]).expect("parses");
        let spec = t.r.to_spec().expect("valid");
        assert_eq!(spec, RenditionSpec::default());
    }

    #[test]
    fn bad_values_name_the_option() {
        let t = T::try_parse_from(["t", "--intro", "logo", "--intro-duration", "4"]).expect("parses");
        let err = t.r.to_spec().expect_err("too long");
        assert!(err.to_string().contains("intro lasts 4.00 s"), "{err}");
        let t = T::try_parse_from(["t", "--outro", "/nonexistent.png"]).expect("parses");
        let err = t.r.to_spec().expect_err("missing file");
        assert!(err.to_string().contains("outro \"/nonexistent.png\""), "{err}");
    }
}
