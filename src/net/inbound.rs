//! A client's request body as the listeners hand it to the proxy and the Admin API: read by
//! hyper (HTTP/2, upgrades, and HTTP/1.1 requests the gateway's own reader leaves to it),
//! or already whole in memory (an HTTP/1.1 request whose body came with its head).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// A request body from a client connection.
#[derive(Debug)]
pub enum Body {
    /// Read from the connection by hyper as the handler asks for it.
    Hyper(hyper::body::Incoming),
    /// The whole body, read with the request head (None once handed out).
    Whole(Option<Bytes>),
}

impl Body {
    /// A body already in memory (empty bodies end at once).
    pub fn whole(bytes: Bytes) -> Body {
        Body::Whole((!bytes.is_empty()).then_some(bytes))
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Hyper(b) => Pin::new(b).poll_frame(cx),
            Body::Whole(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Hyper(b) => b.is_end_stream(),
            Body::Whole(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Hyper(b) => b.size_hint(),
            Body::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_whole_body_is_one_frame_then_the_end() {
        let mut b = Body::whole(Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(b.size_hint().exact(), Some(7));
        assert!(!b.is_end_stream());
        let f = b.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), Bytes::from_static(b"{\"a\":1}"));
        assert!(b.is_end_stream());
        assert!(b.frame().await.is_none());
        assert!(Body::whole(Bytes::new()).is_end_stream());
    }
}
