//! WebSocket frames as the server reads them off the wire, with the limits
//! the gateway sets: a listening socket's (001, 004, the staff feed) and
//! 003's `/ws`. The first input byte picks the protocol; the rest is what
//! the client sent after the handshake.
#![no_main]

use std::io::{Cursor, Read, Write};

use gateway_wire::frames::{LISTEN_MAX, READ_BUFFER, TRANSPORT_MAX, WRITE_BUFFER_MAX};
use libfuzzer_sys::fuzz_target;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

/// The client's bytes to read; what the server writes goes nowhere.
struct Wire(Cursor<Vec<u8>>);

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let max = if pick % 2 == 0 {
        LISTEN_MAX
    } else {
        TRANSPORT_MAX
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(WRITE_BUFFER_MAX)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let mut socket = WebSocket::from_raw_socket(
        Wire(Cursor::new(bytes.to_vec())),
        Role::Server,
        Some(config),
    );
    // Read until the bytes run out or the socket refuses them; no message
    // over the limit may ever be assembled.
    while let Ok(message) = socket.read() {
        assert!(message.len() <= max);
    }
});
