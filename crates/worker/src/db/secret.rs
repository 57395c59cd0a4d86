//! `DATABASE_SECRET_ARN`: the worker reads its database credentials from
//! Secrets Manager itself, and reads them again when the server refuses
//! them, so a rotated password needs no restart.
//!
//! The secret's string is either a whole URL (`postgres://user:pass@host/db?...`)
//! or JSON as RDS writes it: `{"username", "password"}` for an RDS-managed
//! master secret, plus `"host"`, `"port"`, `"dbname"` for a Secrets Manager
//! "RDS credentials" secret. JSON fills in `DATABASE_URL` when that is set
//! (a URL without credentials, carrying `sslmode`, `sslrootcert`, ...).

use aws_sdk_secretsmanager::error::ProvideErrorMetadata as _;

use super::DbError;

/// Where the credentials come from.
#[derive(Clone, Debug)]
pub struct DatabaseSecret {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
    /// `DATABASE_URL`, which JSON secrets complete.
    base: Option<String>,
}

impl DatabaseSecret {
    /// The secret `arn`, completing `base` (if any) when it holds JSON.
    pub fn new(client: aws_sdk_secretsmanager::Client, arn: impl Into<String>, base: Option<String>) -> Self {
        DatabaseSecret {
            client,
            arn: arn.into(),
            base,
        }
    }

    /// The secret's ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// Reads the secret's current value and makes the database URL of it.
    pub async fn url(&self) -> Result<String, DbError> {
        let value = self
            .client
            .get_secret_value()
            .secret_id(&self.arn)
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_secretsmanager::error::SdkError;
                // Not answered at all, or throttled: wait; refused: an operator.
                let outage = matches!(
                    e,
                    SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
                ) || matches!(e.code(), Some("ThrottlingException" | "InternalServiceError"));
                DbError::Secret {
                    arn: self.arn.clone(),
                    message: crate::aws::describe(&e),
                    outage,
                }
            })?;
        let text = value.secret_string().ok_or_else(|| DbError::Secret {
            arn: self.arn.clone(),
            message: "the secret has no SecretString (a binary secret)".into(),
            outage: false,
        })?;
        url_of(text, self.base.as_deref()).map_err(|message| DbError::Secret {
            arn: self.arn.clone(),
            message,
            outage: false,
        })
    }
}

/// The database URL a secret's string stands for.
pub fn url_of(secret: &str, base: Option<&str>) -> Result<String, String> {
    let secret = secret.trim();
    if secret.starts_with("postgres://") || secret.starts_with("postgresql://") {
        url::Url::parse(secret).map_err(|e| format!("the secret is not a valid URL: {e}"))?;
        return Ok(secret.to_owned());
    }
    let json: serde_json::Value = serde_json::from_str(secret)
        .map_err(|_| "the secret is neither a postgres:// URL nor JSON with username and password".to_owned())?;
    let field = |name: &str| match &json[name] {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let (Some(user), Some(password)) = (field("username"), field("password")) else {
        return Err("the secret's JSON lacks \"username\" or \"password\"".into());
    };
    if let Some(engine) = field("engine").filter(|e| !e.starts_with("postgres")) {
        return Err(format!("the secret is for engine {engine:?}, not PostgreSQL"));
    }
    let mut url = match base {
        Some(base) => url::Url::parse(base).map_err(|e| format!("DATABASE_URL is not a valid URL: {e}"))?,
        None if field("host").is_some() => url::Url::parse("postgres://localhost/").map_err(|e| e.to_string())?,
        None => return Err("the secret names no host, and DATABASE_URL (host, database, sslmode) is not set".into()),
    };
    let bad = |what: &str| format!("the secret's {what} cannot go into a URL");
    url.set_username(&user).map_err(|()| bad("username"))?;
    url.set_password(Some(&password)).map_err(|()| bad("password"))?;
    if let Some(host) = field("host") {
        url.set_host(Some(&host))
            .map_err(|e| format!("the secret's host: {e}"))?;
    }
    if let Some(port) = field("port") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("the secret's port {port:?} is not a port"))?;
        url.set_port(Some(port)).map_err(|()| bad("port"))?;
    }
    if let Some(db) = field("dbname") {
        url.set_path(&format!("/{db}"));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_json_and_the_base_url_combine_as_rds_writes_them() {
        let base = "postgres://db.internal:5432/vidworker?sslmode=verify-full&sslrootcert=/etc/ca.pem";
        // An RDS-managed master secret: credentials only.
        let url = url_of(r#"{"username":"app","password":"p@ss/w:rd"}"#, Some(base)).expect("json");
        assert_eq!(
            url,
            "postgres://app:p%40ss%2Fw%3Ard@db.internal:5432/vidworker?sslmode=verify-full&sslrootcert=/etc/ca.pem"
        );
        let parsed: sqlx::postgres::PgConnectOptions = url.parse().expect("sqlx reads it");
        assert_eq!(parsed.get_username(), "app");
        // A Secrets Manager "RDS credentials" secret names the server too.
        let full =
            r#"{"engine":"postgres","host":"rds.example","port":6432,"dbname":"v","username":"u","password":"x"}"#;
        assert_eq!(
            url_of(full, Some(base)).expect("json"),
            "postgres://u:x@rds.example:6432/v?sslmode=verify-full&sslrootcert=/etc/ca.pem"
        );
        assert_eq!(url_of(full, None).expect("json"), "postgres://u:x@rds.example:6432/v");
        // A plain URL is taken as it is.
        assert_eq!(
            url_of(" postgres://a:b@h/d \n", Some(base)).expect("url"),
            "postgres://a:b@h/d"
        );
    }

    #[test]
    fn unusable_secrets_say_why() {
        let err = |s: &str, base: Option<&str>| url_of(s, base).expect_err(s);
        assert!(err("hunter2", None).contains("neither a postgres:// URL nor JSON"));
        assert!(err(r#"{"username":"u"}"#, None).contains("lacks \"username\" or \"password\""));
        assert!(err(r#"{"username":"u","password":"p"}"#, None).contains("DATABASE_URL"));
        assert!(err(r#"{"engine":"mysql","username":"u","password":"p","host":"h"}"#, None).contains("mysql"));
        assert!(err(r#"{"username":"u","password":"p","port":"x"}"#, Some("postgres://h/d")).contains("port"));
    }
}
