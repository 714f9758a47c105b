//! The client frames of 003's `/ws`: JSON objects with a `type`.

use serde_json::Value;

/// Largest frame the transport accepts (base64 of a 10 MiB audio clip, and
/// the rest); a larger one closes the connection.
pub const TRANSPORT_MAX: usize = 14 * 1024 * 1024;
/// Largest frame of any type but `audio`.
pub const FRAME_MAX: usize = 64 * 1024;

/// Transport limits of the sockets whose clients only listen (001's
/// `/ws/chat`, 004's `/ws/tickets`, 003's staff feed): a client message or
/// frame is at most this long.
pub const LISTEN_MAX: usize = 8 * 1024;
/// Every socket reads into a buffer this large (the library's default of
/// 128 KiB a socket would make 10,000 idle sockets cost over 1 GiB).
pub const READ_BUFFER: usize = 4 * 1024;
/// A client that does not read is dropped once this much waits for it.
pub const WRITE_BUFFER_MAX: usize = 1024 * 1024;

/// A frame the protocol knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// The customer says something; `id` is the client's id for it.
    Text { text: String, id: Option<String> },
    /// A clip to transcribe, then as `text`.
    Audio {
        audio: String,
        format: String,
        language: Option<String>,
        id: Option<String>,
    },
    /// The customer asks for a person.
    HandoverRequest,
    /// The customer is (or stopped) typing.
    Typing { is_typing: bool },
}

/// Why a frame was refused: the `code` and `message` of the `error` event
/// the client gets (the connection stays open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> FrameError {
    FrameError {
        code,
        message: message.into(),
    }
}

/// Reads one text frame.
pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    if text.len() > TRANSPORT_MAX {
        return Err(refuse(
            "frame_too_large",
            format!("frames must be at most {} MiB", TRANSPORT_MAX >> 20),
        ));
    }
    let frame: Value = serde_json::from_str(text)
        .map_err(|e| refuse("invalid_json", format!("malformed JSON: {e}")))?;
    let Some(kind) = frame.get("type").and_then(Value::as_str) else {
        return Err(refuse(
            "invalid_request",
            "a frame is a JSON object with a string `type`",
        ));
    };
    if kind != "audio" && text.len() > FRAME_MAX {
        return Err(refuse(
            "frame_too_large",
            format!("{kind} frames must be at most {} KiB", FRAME_MAX / 1024),
        ));
    }
    if crate::text::may_hold_nul(text.as_bytes())
        && frame.as_object().and_then(crate::text::nul_path).is_some()
    {
        return Err(refuse(
            "invalid_request",
            "frames must not contain the NUL character (U+0000)",
        ));
    }
    let string = |field: &str| frame.get(field).and_then(Value::as_str).map(str::to_owned);
    match kind {
        "text" => match string("text") {
            Some(text) => Ok(ClientFrame::Text {
                text,
                id: string("id"),
            }),
            None => Err(refuse(
                "invalid_request",
                "a text frame needs a string `text`",
            )),
        },
        "audio" => match (string("audio"), string("format")) {
            (Some(audio), Some(format)) => Ok(ClientFrame::Audio {
                audio,
                format,
                language: string("language"),
                id: string("id"),
            }),
            _ => Err(refuse(
                "invalid_request",
                "an audio frame needs string `audio` (base64) and `format`",
            )),
        },
        "handover_request" => Ok(ClientFrame::HandoverRequest),
        "typing" => Ok(ClientFrame::Typing {
            is_typing: frame
                .get("isTyping")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        }),
        other => Err(refuse(
            "unknown_type",
            format!(
                "unknown frame type {other:?}: expected text, audio, handover_request or typing"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_each_type() {
        assert_eq!(
            parse(r#"{"type":"text","text":"hi","id":"m1"}"#),
            Ok(ClientFrame::Text {
                text: "hi".into(),
                id: Some("m1".into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"typing"}"#),
            Ok(ClientFrame::Typing { is_typing: true })
        );
        assert_eq!(
            parse(r#"{"type":"handover_request"}"#),
            Ok(ClientFrame::HandoverRequest)
        );
        let code = |t: &str| parse(t).err().map(|e| e.code);
        assert_eq!(code("{"), Some("invalid_json"));
        assert_eq!(code("[]"), Some("invalid_request"));
        assert_eq!(code(r#"{"type":"text"}"#), Some("invalid_request"));
        assert_eq!(code(r#"{"type":"dance"}"#), Some("unknown_type"));
        assert_eq!(
            code(r#"{"type":"text","text":"a\u0000"}"#),
            Some("invalid_request")
        );
        let big = format!(r#"{{"type":"typing","pad":"{}"}}"#, "x".repeat(FRAME_MAX));
        assert_eq!(code(&big), Some("frame_too_large"));
    }
}
