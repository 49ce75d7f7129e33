//! Framing on the control socket: a big-endian `u32` length, then that many bytes of JSON.
//! Exact-length reads never consume bytes past the frame, so SCM_RIGHTS descriptors sent after
//! a request stay attached to their own bytes.

use std::io::{self, Read, Write};

use serde::{Serialize, de::DeserializeOwned};

/// Largest frame accepted (an `exec` request carries the caller's environment).
pub const MAX_FRAME: usize = 4 << 20;

/// Write `msg` as one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "control message too large"));
    }
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)?;
    w.flush()
}

/// Read one frame and decode it; a clean EOF before the length is `UnexpectedEof`.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("control frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::Request;

    #[test]
    fn round_trips_and_rejects_oversized_frames() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::SessionList).unwrap();
        buf.extend_from_slice(b"trailing");
        let mut r = &buf[..];
        let req: Request = read_frame(&mut r).unwrap();
        assert_eq!(req, Request::SessionList);
        assert_eq!(r, b"trailing", "reads stop at the frame's end");

        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        let err = read_frame::<Request>(&mut &huge[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = read_frame::<Request>(&mut &b"\x00\x00\x00\x05{"[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
