//! `multipart/form-data` bodies with the gateway's upload limits (scaled
//! down so that the fuzzer reaches them). The body is the input, the
//! boundary `B`.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use gateway_wire::multipart::{Limits, read};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    file_max: 512,
    files_max: 3,
    field_max: 64,
};

/// The body arrives at once, in pieces: nothing ever waits.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Split into chunks as a network would deliver it.
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(97)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let body = futures_util::stream::iter(chunks);
    if let Ok(form) = block_on(read(body, "B", LIMITS)) {
        assert!(form.files.len() <= LIMITS.files_max);
        assert!(form.files.iter().all(|f| f.bytes.len() <= LIMITS.file_max));
        assert!(
            form.fields
                .values()
                .all(|v| v.len() <= LIMITS.field_max && !v.contains('\0'))
        );
    }
});
