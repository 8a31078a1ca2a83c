//! Reading a request body: under the size cap, by the body deadline, and
//! within the process-wide budget of buffered bytes, so that many slow or
//! large bodies at once cannot exhaust the server's memory.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// More bytes than the cap.
    #[error("request body exceeds the {} MiB limit", .0 >> 20)]
    TooLarge(usize),
    /// The client did not send the whole body in time.
    #[error("the request body did not arrive in time")]
    TimedOut,
    /// The buffer budget stayed full until the deadline.
    #[error("too many request bodies are being received at once; retry shortly")]
    Busy,
    /// The connection failed while reading.
    #[error("cannot read the request body: {0}")]
    Read(String),
}

/// Bytes of request bodies that may be buffered at once.
#[derive(Debug, Clone)]
pub struct Budget {
    /// One permit per byte. A Tokio semaphore: a body waits for room
    /// asynchronously, within its deadline.
    bytes: Arc<Semaphore>,
}

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Budget {
            bytes: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
        }
    }
}

/// A body read whole, holding its share of the budget until dropped.
#[derive(Debug)]
pub struct Read {
    /// The bytes.
    pub bytes: Vec<u8>,
    _room: Option<OwnedSemaphorePermit>,
}

/// Reads `body` whole: at most `limit` bytes, by `deadline`, each chunk
/// counted against `budget` before it is kept.
///
/// # Errors
///
/// Too large, too slow, no room in the budget in time, or a broken
/// connection.
pub async fn read(
    body: Body,
    limit: usize,
    deadline: Instant,
    budget: &Budget,
) -> Result<Read, Error> {
    let hint = body.size_hint();
    if hint.lower() > limit as u64 {
        return Err(Error::TooLarge(limit));
    }
    let mut waiting_for_room = false;
    let reading = async {
        let mut body = body;
        let mut bytes = Vec::with_capacity(hint.exact().map_or(0, |n| n as usize));
        let mut room: Option<OwnedSemaphorePermit> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Error::Read(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if bytes.len() + data.len() > limit {
                return Err(Error::TooLarge(limit));
            }
            if !data.is_empty() {
                waiting_for_room = true;
                let permit = budget
                    .bytes
                    .clone()
                    .acquire_many_owned(data.len() as u32)
                    .await
                    .map_err(|_| Error::Busy)?;
                waiting_for_room = false;
                match &mut room {
                    Some(room) => room.merge(permit),
                    None => room = Some(permit),
                }
            }
            bytes.extend_from_slice(&data);
        }
        Ok(Read { bytes, _room: room })
    };
    let outcome = tokio::time::timeout_at(deadline.into(), reading).await;
    match outcome {
        Ok(result) => result,
        Err(_) if waiting_for_room => Err(Error::Busy),
        Err(_) => Err(Error::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Bytes;
    use futures::stream;

    use super::*;

    fn chunks(parts: Vec<&'static [u8]>) -> Body {
        Body::from_stream(stream::iter(
            parts
                .into_iter()
                .map(|p| Ok::<_, std::io::Error>(Bytes::from_static(p))),
        ))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn reads_chunks_under_the_cap() {
        let budget = Budget::new(100);
        let read = read(chunks(vec![b"ab", b"", b"cd"]), 4, soon(), &budget)
            .await
            .unwrap();
        assert_eq!(read.bytes, b"abcd");
        assert_eq!(budget.bytes.available_permits(), 96, "held while in use");
        drop(read);
        assert_eq!(budget.bytes.available_permits(), 100);
        let over = super::read(chunks(vec![b"ab", b"cde"]), 4, soon(), &budget).await;
        assert!(matches!(over, Err(Error::TooLarge(4))));
        assert_eq!(budget.bytes.available_permits(), 100, "given back");
    }

    #[tokio::test]
    async fn a_full_budget_waits_until_the_deadline_then_is_busy() {
        let budget = Budget::new(4);
        let held = read(chunks(vec![b"abcd"]), 10, soon(), &budget)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(50);
        let busy = read(chunks(vec![b"e"]), 10, deadline, &budget).await;
        assert!(matches!(busy, Err(Error::Busy)), "{busy:?}");
        drop(held);
        assert!(read(chunks(vec![b"e"]), 10, soon(), &budget).await.is_ok());
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out() {
        let budget = Budget::new(100);
        let (sender, body) = {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
            (tx, Body::from_stream(tokio_stream_from(rx)))
        };
        sender.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(50);
        let slow = read(body, 10, deadline, &budget).await;
        assert!(matches!(slow, Err(Error::TimedOut)), "{slow:?}");
        drop(sender);
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
