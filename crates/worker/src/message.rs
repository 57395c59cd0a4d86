//! The job message the platform sends, `{"video_id": "<uuid>"}`, and why a
//! message may not be one. Keys never come from the message: the video's
//! row says where its original is.
//!
//! An operator's requeue or redrive sends `{"video_id": …, "generation":
//! N}`, N being the row's new generation; the platform's own messages are
//! generation 0. A message of an older generation than its row is a stray
//! copy of a message that was superseded, and does nothing.

use serde::Deserialize;
use uuid::Uuid;

/// The message body: `{"video_id": "<uuid>", "generation": N}`. Other
/// fields are ignored; keys never come from the message.
#[derive(Debug, Deserialize)]
struct Body {
    video_id: serde_json::Value,
    #[serde(default)]
    generation: Option<serde_json::Value>,
}

/// A job message: the video, and the generation of the video it was sent
/// for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobMessage {
    /// The video.
    pub video_id: Uuid,
    /// 0 for the platform's messages; an operator's requeue bumps it.
    pub generation: i32,
}

/// The body of a job message, as the platform sends it.
pub fn body(video_id: Uuid) -> String {
    serde_json::json!({ "video_id": video_id }).to_string()
}

/// The body of a job message for `generation` of the video, as a requeue
/// sends it.
pub fn body_for(video_id: Uuid, generation: i32) -> String {
    if generation == 0 {
        return body(video_id);
    }
    serde_json::json!({ "video_id": video_id, "generation": generation }).to_string()
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
    /// `generation` is not a small non-negative integer.
    #[error("\"generation\" is {0}, not a non-negative integer")]
    BadGeneration(String),
}

/// The job a message asks for, or why the message is malformed.
pub fn parse(body: &str) -> Result<JobMessage, Malformed> {
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
    let video_id = Uuid::parse_str(text).map_err(|_| Malformed::NotUuid(text.to_owned()))?;
    let generation = match parsed.generation {
        None => 0,
        Some(g) => g
            .as_u64()
            .and_then(|g| i32::try_from(g).ok())
            .ok_or_else(|| Malformed::BadGeneration(g.to_string()))?,
    };
    Ok(JobMessage { video_id, generation })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_body_names_its_video_and_extra_fields_are_ignored() {
        let id = Uuid::new_v4();
        let text = format!(r#"{{"video_id": "{id}", "original_key": "../../etc/passwd"}}"#);
        assert_eq!(
            parse(&text),
            Ok(JobMessage {
                video_id: id,
                generation: 0
            })
        );
        assert_eq!(parse(&body_for(id, 3)).map(|m| m.generation), Ok(3));
        assert_eq!(body_for(id, 0), body(id), "generation 0 is what the platform sends");
    }

    #[test]
    fn malformed_bodies_say_what_is_wrong() {
        let why = |body: &str| parse(body).unwrap_err().to_string();
        assert!(why("hello").contains("not JSON"));
        assert!(why("{}").contains("no \"video_id\""));
        assert!(why(r#"{"video_id": 7}"#).contains("7, not a string"));
        assert!(why(r#"{"video_id": "../x"}"#).contains("is not a UUID"));
        let id = Uuid::new_v4();
        assert!(why(&format!(r#"{{"video_id": "{id}", "generation": -1}}"#)).contains("\"generation\" is -1"));
    }
}
