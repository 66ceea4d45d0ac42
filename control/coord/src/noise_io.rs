//! Noise records as a byte stream: `AsyncRead`/`AsyncWrite` over an established
//! [`Transport`], so that hyper can run HTTP/2 on top of it. Reads decrypt whole records into
//! a buffer; writes seal at most one record's worth per call.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use weft_controlbase::{RecordReader, Transport, MAX_PLAINTEXT_SIZE};

/// An established ts2021 connection over `S`.
pub struct NoiseStream<S> {
    inner: S,
    transport: Transport,
    reader: RecordReader,
    /// Decrypted bytes not yet read.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Sealed bytes not yet written to `inner`.
    out: Vec<u8>,
    out_pos: usize,
}

impl<S> NoiseStream<S> {
    /// Wraps `inner` after the handshake; `leftover` are bytes already read from `inner` past
    /// the handshake (the start of the first records).
    pub fn new(inner: S, transport: Transport, leftover: &[u8]) -> Self {
        let mut reader = RecordReader::new();
        reader.push(leftover);
        Self {
            inner,
            transport,
            reader,
            plain: Vec::new(),
            plain_pos: 0,
            out: Vec::new(),
            out_pos: 0,
        }
    }

    fn broken(e: weft_controlbase::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> NoiseStream<S> {
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let rest = self.out.get(self.out_pos..).unwrap_or_default();
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.out_pos += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for NoiseStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_pos < this.plain.len() {
                let avail = this.plain.get(this.plain_pos..).unwrap_or_default();
                let n = avail.len().min(buf.remaining());
                buf.put_slice(avail.get(..n).unwrap_or_default());
                this.plain_pos += n;
                return Poll::Ready(Ok(()));
            }
            match this.reader.next(&mut this.transport) {
                Ok(Some(p)) => {
                    this.plain = p;
                    this.plain_pos = 0;
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(Self::broken(e))),
            }
            let mut chunk = [0u8; 4096];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => this.reader.push(rb.filled()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for NoiseStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Earlier records go out first; then this call seals at most one record.
        match this.poll_flush_out(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        let n = data.len().min(MAX_PLAINTEXT_SIZE);
        this.transport
            .seal(data.get(..n).unwrap_or_default(), &mut this.out)
            .map_err(Self::broken)?;
        // Best effort now; whatever is left goes at the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_flush_out(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_flush_out(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}
