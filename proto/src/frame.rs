//! Framing: `[u32 big-endian length][u8 type][payload]`, where `length` counts the type byte
//! and the payload. Every read is bounded by a caller-supplied maximum so a peer cannot make
//! the other side allocate without limit.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Frame type bytes. Unknown types are a protocol error, never skipped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    Hello = 0x01,
    Welcome = 0x02,
    Reject = 0x03,
    Status = 0x04,
    Head = 0x05,
    /// An `RpcRequest` on its own: what `RpcRequest::encode` gives, sent tagged.
    RpcRequest = 0x10,
    /// An `RpcResponse` on its own: what `RpcResponse::encode` gives, sent tagged.
    RpcResponse = 0x11,
    /// Gateway -> node on the request stream ([`crate::msg::put_tagged`]): `[u64 tag]` and an
    /// `RpcRequest` payload.
    TaggedRequest = 0x12,
    /// Node -> gateway, on the request stream or (large ones) a stream of its own: `[u64 tag]`
    /// and an `RpcResponse` payload.
    TaggedResponse = 0x13,
    /// Node -> gateway on the request stream: `[u64 tag]`, the request was refused (the node is
    /// at its in-flight limit) and another node should get it.
    Busy = 0x14,
    /// Gateway -> node, first frame of a subscription stream ([`crate::sub`]).
    Subscribe = 0x20,
    /// Node -> gateway on a subscription stream.
    SubEvent = 0x21,
}

impl TryFrom<u8> for FrameType {
    type Error = FrameError;
    fn try_from(b: u8) -> Result<Self, FrameError> {
        Ok(match b {
            0x01 => Self::Hello,
            0x02 => Self::Welcome,
            0x03 => Self::Reject,
            0x04 => Self::Status,
            0x05 => Self::Head,
            0x10 => Self::RpcRequest,
            0x11 => Self::RpcResponse,
            0x12 => Self::TaggedRequest,
            0x13 => Self::TaggedResponse,
            0x14 => Self::Busy,
            0x20 => Self::Subscribe,
            0x21 => Self::SubEvent,
            other => return Err(FrameError::UnknownType(other)),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("expected a {expected:?} frame, got {got:?}")]
    Unexpected { expected: FrameType, got: FrameType },
    #[error("truncated frame")]
    Truncated,
    #[error("malformed {0} payload: {1}")]
    Malformed(&'static str, String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A decoded frame: its type and payload (without the header).
#[derive(Debug, Clone)]
pub struct Frame {
    pub ty: FrameType,
    pub payload: Bytes,
}

impl Frame {
    pub fn expect(self, expected: FrameType) -> Result<Bytes, FrameError> {
        if self.ty == expected {
            Ok(self.payload)
        } else {
            Err(FrameError::Unexpected {
                expected,
                got: self.ty,
            })
        }
    }
}

/// Encodes a frame header followed by `payload` into one contiguous buffer, so the stream
/// write is a single call.
pub fn encode(ty: FrameType, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u32(1 + payload.len() as u32);
    buf.put_u8(ty as u8);
    buf.put_slice(payload);
    buf.freeze()
}

/// Decodes exactly one frame occupying all of `buf` (a stream read to its end).
pub fn decode_one(buf: Bytes, max: usize) -> Result<Frame, FrameError> {
    if buf.len() < 5 {
        return Err(FrameError::Truncated);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if buf.len() != 4 + len {
        return Err(FrameError::Truncated);
    }
    let ty = FrameType::try_from(buf[4])?;
    Ok(Frame {
        ty,
        payload: buf.slice(5..),
    })
}

/// Reads the next frame from a stream. `Ok(None)` means the peer finished the stream cleanly
/// at a frame boundary.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < 4 {
        let n = r.read(&mut header[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += n;
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    let ty = FrameType::try_from(body[0])?;
    let payload = Bytes::from(body).slice(1..);
    Ok(Some(Frame { ty, payload }))
}

/// Frames above this size are read into a buffer of their own; smaller ones are copied out of
/// the shared read buffer. Either way a frame owns exactly its bytes, so an answer kept in a
/// cache never pins a read buffer.
const OWN_BUFFER_FROM: usize = 16 * 1024;

/// Reads frames from a long-lived stream, many per read: one `read` takes whatever has
/// arrived, however many frames that is (the per-request streams' `read_frame` needs two reads
/// per frame).
pub struct FrameReader {
    buf: BytesMut,
    max: usize,
}

impl FrameReader {
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
        }
    }

    /// The next frame; `Ok(None)` when the peer finished the stream at a frame boundary.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<Frame>, FrameError> {
        loop {
            let want = match self.parse()? {
                Ok(frame) => return Ok(Some(frame)),
                Err(want) => want,
            };
            if want > OWN_BUFFER_FROM {
                return self.read_large(r, want).await.map(Some);
            }
            if self.buf.capacity() - self.buf.len() < want.max(1024) {
                self.buf.reserve(want.max(8 * 1024));
            }
            if r.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// After [`FrameError::TooLarge`] from [`Self::next`]: reads past that frame, keeping only
    /// its type byte and its first `keep` payload bytes (a tag), so the stream can go on. The
    /// rest is read and dropped a piece at a time, never held.
    pub async fn skip_large<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        keep: usize,
    ) -> Result<(u8, Bytes), FrameError> {
        if self.buf.len() < 4 {
            return Err(FrameError::Truncated);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        let head = (5 + keep).min(4 + len);
        while self.buf.len() < head {
            self.buf.reserve(head);
            if r.read_buf(&mut self.buf).await? == 0 {
                return Err(FrameError::Truncated);
            }
        }
        let ty = self.buf[4];
        let kept = Bytes::copy_from_slice(&self.buf[5..head]);
        let mut left = 4 + len;
        let buffered = left.min(self.buf.len());
        self.buf.advance(buffered);
        left -= buffered;
        let mut scratch = [0u8; 4096];
        while left > 0 {
            let n = r.read(&mut scratch[..left.min(4096)]).await?;
            if n == 0 {
                return Err(FrameError::Truncated);
            }
            left -= n;
        }
        Ok((ty, kept))
    }

    /// A whole frame at the front of the buffer, taken out; or how many bytes the frame at the
    /// front needs in all.
    fn parse(&mut self) -> Result<Result<Frame, usize>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(Err(5));
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if self.buf.len() < 4 + len {
            return Ok(Err(4 + len));
        }
        let ty = FrameType::try_from(self.buf[4])?;
        let payload = Bytes::copy_from_slice(&self.buf[5..4 + len]);
        self.buf.advance(4 + len);
        Ok(Ok(Frame { ty, payload }))
    }

    /// Reads the frame at the front (`total` bytes with its length) into a buffer of its own.
    async fn read_large<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        total: usize,
    ) -> Result<Frame, FrameError> {
        let mut own = BytesMut::with_capacity(total);
        own.extend_from_slice(&self.buf);
        self.buf = BytesMut::new();
        while own.len() < total {
            let mut limited = (&mut *r).take((total - own.len()) as u64);
            if limited.read_buf(&mut own).await? == 0 {
                return Err(FrameError::Truncated);
            }
        }
        let ty = FrameType::try_from(own[4])?;
        Ok(Frame {
            ty,
            payload: own.freeze().slice(5..),
        })
    }
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    ty: FrameType,
    payload: &[u8],
) -> Result<(), FrameError> {
    w.write_all(&encode(ty, payload)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_one() {
        let f = encode(FrameType::Status, b"{\"x\":1}");
        let d = decode_one(f, 1024).unwrap();
        assert_eq!(d.ty, FrameType::Status);
        assert_eq!(&d.payload[..], b"{\"x\":1}");
    }

    #[test]
    fn rejects_oversize_truncated_and_unknown() {
        let f = encode(FrameType::Hello, &[0u8; 100]);
        assert!(matches!(
            decode_one(f.clone(), 50),
            Err(FrameError::TooLarge { len: 101, max: 50 })
        ));
        assert!(matches!(
            decode_one(f.slice(..50), 1000),
            Err(FrameError::Truncated)
        ));
        let mut bad = BytesMut::new();
        bad.put_u32(1);
        bad.put_u8(0x7f);
        assert!(matches!(
            decode_one(bad.freeze(), 10),
            Err(FrameError::UnknownType(0x7f))
        ));
    }

    #[tokio::test]
    async fn stream_reads_frames_in_order_and_bounds_them() {
        let mut data = Vec::new();
        data.extend_from_slice(&encode(FrameType::Hello, b"a"));
        data.extend_from_slice(&encode(FrameType::Status, b"bc"));
        let mut r = &data[..];
        let a = read_frame(&mut r, 10).await.unwrap().unwrap();
        assert_eq!((a.ty, &a.payload[..]), (FrameType::Hello, &b"a"[..]));
        let b = read_frame(&mut r, 10).await.unwrap().unwrap();
        assert_eq!((b.ty, &b.payload[..]), (FrameType::Status, &b"bc"[..]));
        assert!(read_frame(&mut r, 10).await.unwrap().is_none());

        let big = encode(FrameType::Hello, &[1u8; 64]);
        let mut r = &big[..];
        assert!(matches!(
            read_frame(&mut r, 10).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut r = &big[..10];
        assert!(matches!(
            read_frame(&mut r, 100).await,
            Err(FrameError::Truncated)
        ));
    }

    /// Many frames per read, frames split across reads, a large frame in a buffer of its own,
    /// and the same bounds as `read_frame`.
    #[tokio::test]
    async fn frame_reader_takes_frames_however_they_arrive() {
        let big = vec![7u8; OWN_BUFFER_FROM * 3];
        let mut data = Vec::new();
        for i in 0..50u8 {
            data.extend_from_slice(&encode(FrameType::Status, &[i; 3]));
        }
        data.extend_from_slice(&encode(FrameType::RpcResponse, &big));
        data.extend_from_slice(&encode(FrameType::Head, b"end"));
        for piece in [1, 7, 4096, data.len()] {
            let (mut tx, mut rx) = tokio::io::duplex(piece.max(64));
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                for c in sent.chunks(piece) {
                    tx.write_all(c).await.unwrap();
                }
            });
            let mut r = FrameReader::new(1 << 20);
            for i in 0..50u8 {
                let f = r.next(&mut rx).await.unwrap().unwrap();
                assert_eq!((f.ty, &f.payload[..]), (FrameType::Status, &[i; 3][..]));
            }
            let f = r.next(&mut rx).await.unwrap().unwrap();
            assert_eq!((f.ty, f.payload.len()), (FrameType::RpcResponse, big.len()));
            assert!(f.payload.iter().all(|&b| b == 7));
            let f = r.next(&mut rx).await.unwrap().unwrap();
            assert_eq!((f.ty, &f.payload[..]), (FrameType::Head, &b"end"[..]));
            writer.await.unwrap();
            assert!(r.next(&mut rx).await.unwrap().is_none(), "piece {piece}");
        }

        let mut r = FrameReader::new(10);
        let big = encode(FrameType::Hello, &[1u8; 64]);
        assert!(matches!(
            r.next(&mut &big[..]).await,
            Err(FrameError::TooLarge { len: 65, max: 10 })
        ));
        let mut r = FrameReader::new(100);
        assert!(matches!(
            r.next(&mut &big[..10]).await,
            Err(FrameError::Truncated)
        ));
        let mut r = FrameReader::new(1 << 20);
        let large = encode(FrameType::Hello, &[1u8; OWN_BUFFER_FROM * 2]);
        assert!(matches!(
            r.next(&mut &large[..OWN_BUFFER_FROM]).await,
            Err(FrameError::Truncated)
        ));
        let mut r = FrameReader::new(100);
        assert!(matches!(
            r.next(&mut &[0u8, 0, 0, 1, 0x7f][..]).await,
            Err(FrameError::UnknownType(0x7f))
        ));

        // A frame over the bound is skipped whole, its tag kept, and the next one read.
        let mut data = Vec::new();
        let mut big = 42u64.to_be_bytes().to_vec();
        big.extend_from_slice(&[9u8; 10_000]);
        data.extend_from_slice(&encode(FrameType::TaggedRequest, &big));
        data.extend_from_slice(&encode(FrameType::Head, b"after"));
        let (mut tx, mut rx) = tokio::io::duplex(512);
        let writer = tokio::spawn(async move { tx.write_all(&data).await.unwrap() });
        let mut r = FrameReader::new(1000);
        assert!(matches!(
            r.next(&mut rx).await,
            Err(FrameError::TooLarge {
                len: 10_009,
                max: 1000
            })
        ));
        let (ty, tag) = r.skip_large(&mut rx, 8).await.unwrap();
        assert_eq!(ty, FrameType::TaggedRequest as u8);
        assert_eq!(&tag[..], &42u64.to_be_bytes());
        let f = r.next(&mut rx).await.unwrap().unwrap();
        assert_eq!((f.ty, &f.payload[..]), (FrameType::Head, &b"after"[..]));
        writer.await.unwrap();
    }
}
