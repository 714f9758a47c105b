//! `multipart/form-data` uploads: text fields and files, each refused as
//! soon as it passes its limit, so that a huge body is never buffered.

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::Stream;

/// What one form may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of one file.
    pub file_max: usize,
    /// Files in one form.
    pub files_max: usize,
    /// Bytes of one text field.
    pub field_max: usize,
}

/// A file of a form, not yet checked or stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePart {
    /// Its name, cleaned for showing ([`crate::text::clean_name`]).
    pub file_name: String,
    /// The type the client declared, if any.
    pub declared_type: Option<String>,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    /// Text fields by name (the last of a repeated name).
    pub fields: HashMap<String, String>,
    pub files: Vec<FilePart>,
}

/// Why a form was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// A file over [`Limits::file_max`] (its name).
    FileTooLarge(String),
    /// More than [`Limits::files_max`] files.
    TooManyFiles,
    /// A text field over [`Limits::field_max`] (its name).
    FieldTooLong(String),
    /// A text field that is not UTF-8 (its name).
    NotText(String),
    /// A NUL character in a text field (its name).
    Nul(String),
    /// The body could not be read (cut short, or over the body limit).
    Unreadable(String),
    /// Not multipart as the standard has it.
    Malformed(String),
}

/// The boundary a `Content-Type` names.
pub fn boundary(content_type: &str) -> Result<String, FormError> {
    multer::parse_boundary(content_type).map_err(|e| FormError::Malformed(e.to_string()))
}

/// Reads a whole form from `body`.
pub async fn read<S, E>(body: S, boundary: &str, limits: Limits) -> Result<Form, FormError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let mut multipart = multer::Multipart::new(body, boundary);
    let mut form = Form::default();
    while let Some(mut field) = multipart.next_field().await.map_err(refused)? {
        let name = field.name().unwrap_or_default().to_owned();
        if let Some(file_name) = field.file_name().map(crate::text::clean_name) {
            if form.files.len() == limits.files_max {
                return Err(FormError::TooManyFiles);
            }
            let declared_type = field.content_type().map(ToString::to_string);
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(refused)? {
                if bytes.len() + chunk.len() > limits.file_max {
                    return Err(FormError::FileTooLarge(file_name));
                }
                bytes.extend_from_slice(&chunk);
            }
            form.files.push(FilePart {
                file_name,
                declared_type,
                bytes,
            });
        } else {
            let mut text = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(refused)? {
                if text.len() + chunk.len() > limits.field_max {
                    return Err(FormError::FieldTooLong(name));
                }
                text.extend_from_slice(&chunk);
            }
            let text = String::from_utf8(text).map_err(|_| FormError::NotText(name.clone()))?;
            if text.contains('\0') || name.contains('\0') {
                return Err(FormError::Nul(name));
            }
            form.fields.insert(name, text);
        }
    }
    Ok(form)
}

fn refused(e: multer::Error) -> FormError {
    match e {
        multer::Error::StreamReadFailed(e) => FormError::Unreadable(e.to_string()),
        other => FormError::Malformed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        file_max: 16,
        files_max: 2,
        field_max: 8,
    };

    async fn form(body: &'static str) -> Result<Form, FormError> {
        let body = body.replace('\n', "\r\n");
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(body))]);
        read(stream, "B", LIMITS).await
    }

    #[tokio::test]
    async fn fields_and_files_within_their_limits() {
        let f = form("--B\nContent-Disposition: form-data; name=\"sessionId\"\n\n42\n--B\nContent-Disposition: form-data; name=\"file\"; filename=\"../a.txt\"\nContent-Type: text/plain\n\nhello\n--B--\n")
            .await
            .expect("form");
        assert_eq!(f.fields["sessionId"], "42");
        assert_eq!(f.files[0].file_name, "a.txt");
        assert_eq!(f.files[0].bytes, b"hello");
        assert_eq!(
            form("--B\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\n\n0123456789abcdefg\n--B--\n").await,
            Err(FormError::FileTooLarge("a".into()))
        );
        assert_eq!(
            form("--B\nContent-Disposition: form-data; name=\"x\"\n\n123456789\n--B--\n").await,
            Err(FormError::FieldTooLong("x".into()))
        );
        assert!(matches!(
            form("garbage").await,
            Err(FormError::Malformed(_))
        ));
    }
}
