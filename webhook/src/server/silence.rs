//! A connection that says nothing after its TLS handshake is closed.
//!
//! hyper's HTTP/1.1 header timeout starts once hyper knows the protocol,
//! and it learns that from the first bytes (the HTTP/2 preface or a request
//! line); HTTP/2 has no such timeout at all. A client that finishes the
//! handshake and then stays silent would hold its connection, and one of
//! `--max-connections`, forever. [`FirstBytes`] gives it until a deadline to
//! send something; after that, hyper's own limits apply.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream whose first bytes must arrive within a deadline.
pub struct FirstBytes<S> {
    inner: S,
    /// Pending until the first bytes arrive, then `None`.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> FirstBytes<S> {
    /// `inner`, which must deliver bytes within `within`.
    pub fn new(inner: S, within: Duration) -> Self {
        FirstBytes {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => self.deadline = None,
            Poll::Pending => {
                if let Some(deadline) = &mut self.deadline
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing after the TLS handshake",
                    )));
                }
            }
            Poll::Ready(_) => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn silence_past_the_deadline_fails_the_read_and_a_word_disarms_it() {
        let (client, server) = tokio::io::duplex(64);
        let mut silent = FirstBytes::new(server, Duration::from_millis(30));
        let mut buffer = [0u8; 8];
        let error = silent.read(&mut buffer).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut talking = FirstBytes::new(server, Duration::from_millis(30));
        client.write_all(b"GET").await.unwrap();
        assert_eq!(talking.read(&mut buffer).await.unwrap(), 3);
        // Past the deadline, a quiet read simply waits.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let waited =
            tokio::time::timeout(Duration::from_millis(30), talking.read(&mut buffer)).await;
        assert!(waited.is_err(), "still waiting for the client");
    }
}
