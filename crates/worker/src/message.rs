//! The job message the platform sends, `{"video_id": "<uuid>"}`, and why a
//! message may not be one. Keys never come from the message: the video's
//! row says where its original is.

use serde::Deserialize;
use uuid::Uuid;

/// The message body the platform sends: `{"video_id": "<uuid>"}`. Other
/// fields are ignored; keys never come from the message.
#[derive(Debug, Deserialize)]
struct Body {
    video_id: serde_json::Value,
}

/// The body of a job message, as the platform sends it.
pub fn body(video_id: Uuid) -> String {
    serde_json::json!({ "video_id": video_id }).to_string()
}

/// Why a message body is not a job.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not JSON at all.
    #[error("the body is not JSON ({0})")]
    NotJson(String),
    /// JSON without a `video_id`.
    #[error("the body has no \"video_id\"")]
    NoVideoId,
    /// `video_id` is a number, an object, …
    #[error("\"video_id\" is {0}, not a string")]
    NotString(String),
    /// `video_id` is a string but not a UUID.
    #[error("\"video_id\" {0:?} is not a UUID")]
    NotUuid(String),
}

/// The video a message asks for, or why the message is malformed.
pub fn parse(body: &str) -> Result<Uuid, Malformed> {
    let parsed: Body = serde_json::from_str(body).map_err(|e| {
        if e.is_data() {
            Malformed::NoVideoId
        } else {
            Malformed::NotJson(e.to_string())
        }
    })?;
    let text = parsed
        .video_id
        .as_str()
        .ok_or_else(|| Malformed::NotString(parsed.video_id.to_string()))?;
    Uuid::parse_str(text).map_err(|_| Malformed::NotUuid(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_body_names_its_video_and_extra_fields_are_ignored() {
        let id = Uuid::new_v4();
        let body = format!(r#"{{"video_id": "{id}", "original_key": "../../etc/passwd"}}"#);
        assert_eq!(parse(&body), Ok(id));
    }

    #[test]
    fn malformed_bodies_say_what_is_wrong() {
        let why = |body: &str| parse(body).unwrap_err().to_string();
        assert!(why("hello").contains("not JSON"));
        assert!(why("{}").contains("no \"video_id\""));
        assert!(why(r#"{"video_id": 7}"#).contains("7, not a string"));
        assert!(why(r#"{"video_id": "../x"}"#).contains("is not a UUID"));
    }
}
