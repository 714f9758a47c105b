//! The gateway's readers of outside input, kept apart from everything else
//! so that each can be fuzzed on its own (see `fuzz/`): whatever bytes a
//! client sends, these answer a value or an error, never a panic, and never
//! more memory than their stated limits.
//!
//! - [`ids`]: ids as clients spell them (one spelling each).
//! - [`text`]: form bodies, file names, NUL characters in JSON.
//! - [`webhook`]: 004's incoming webhook: signatures, signed timestamps,
//!   the envelope.
//! - [`frames`]: the client frames of 003's `/ws`.
//! - [`multipart`]: `multipart/form-data` uploads.

pub mod frames;
pub mod ids;
pub mod multipart;
pub mod text;
pub mod webhook;
