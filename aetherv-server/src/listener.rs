//! The listener the server answers on: TCP, with one change to what goes out.
//!
//! hyper answers a request head it cannot take by itself, before any handler or middleware
//! runs: `400` for a malformed request line or header, `414` for a URI over 65,534 bytes and
//! `431` for header fields over its buffer (about 400 KiB) or more than 100 of them. Those
//! answers have an empty body, while the API documents one JSON error shape for every status.
//! [`JsonErrorListener`] accepts connections like a [`TcpListener`] and wraps each one in
//! [`JsonErrors`], which recognises exactly such an answer when hyper writes it (a status line
//! of 400, 414 or 431 whose head says `content-length: 0` and that carries no body; every
//! answer of our own handlers has a JSON body) and writes the same status with the JSON error
//! body instead. hyper closes the connection after these answers, so the replaced answer is
//! always the last thing written.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{ErrorBody, ErrorCode, ErrorDetail};

/// A TCP listener whose connections answer hyper's own refusals in the API's JSON error shape.
#[derive(Debug)]
pub struct JsonErrorListener {
    inner: TcpListener,
}

impl JsonErrorListener {
    /// Wraps a bound listener.
    #[must_use]
    pub fn new(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl axum::serve::Listener for JsonErrorListener {
    type Io = JsonErrors<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // TcpListener's own implementation logs and retries accept errors.
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (JsonErrors::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One connection: reads pass through; a bodiless 400/414/431 answer written by hyper is
/// replaced with the same status and a JSON error body.
#[derive(Debug)]
pub struct JsonErrors<T> {
    inner: T,
    /// Bytes of a replacement answer still to be written.
    pending: Vec<u8>,
    /// How many of them are written.
    written: usize,
}

impl<T> JsonErrors<T> {
    /// Wraps a connection.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    /// Writes what is left of a replacement answer.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Replaces `head` when it is one of hyper's own answers; answers how many of the caller's
    /// bytes count as written.
    fn poll_replace_or_write(
        &mut self,
        cx: &mut Context<'_>,
        head: &[u8],
    ) -> Option<Poll<io::Result<usize>>> {
        let replacement = replacement_for(head)?;
        self.pending = replacement;
        self.written = 0;
        // The caller's bytes are taken whole; the replacement goes out now or on flush.
        Some(match self.drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(head.len())),
        })
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(done) = self.poll_replace_or_write(cx, buf) {
            return done;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        // hyper writes an answer's head as the first slice; its own refusals have no body.
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(first), None) = (nonempty.next(), nonempty.next())
            && let Some(done) = self.poll_replace_or_write(cx, first)
        {
            return done;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The JSON answer to send instead of `head`, when `head` is exactly one of hyper's bodiless
/// refusals (status 400, 414 or 431, `content-length: 0`, nothing after the head).
fn replacement_for(head: &[u8]) -> Option<Vec<u8>> {
    let status = automatic_status(head)?;
    let (code, message) = match status {
        StatusCode::URI_TOO_LONG => (
            ErrorCode::UriTooLong,
            "the request URI is longer than 65,534 bytes",
        ),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            ErrorCode::HeadersTooLarge,
            "the request's header fields are too large (more than 100 fields, or about 400 KiB)",
        ),
        _ => (
            ErrorCode::BadRequest,
            "the request cannot be parsed: its request line or a header field is malformed",
        ),
    };
    let body = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code,
            message: message.to_owned(),
            field: None,
            details: Vec::new(),
        },
    })
    .ok()?;
    let text = std::str::from_utf8(head).ok()?;
    let date = text
        .split("\r\n")
        .find(|line| line.len() > 5 && line[..5].eq_ignore_ascii_case("date:"));
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if let Some(date) = date {
        answer.push_str(date);
        answer.push_str("\r\n");
    }
    answer.push_str("\r\n");
    let mut bytes = answer.into_bytes();
    bytes.extend_from_slice(&body);
    Some(bytes)
}

/// The status of `head` when it is a whole bodiless 400/414/431 answer.
fn automatic_status(head: &[u8]) -> Option<StatusCode> {
    // Status line: "HTTP/1.1 431 ...".
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let status = match rest.get(..4)? {
        b"400 " => StatusCode::BAD_REQUEST,
        b"414 " => StatusCode::URI_TOO_LONG,
        b"431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    // The whole write is the head, nothing after it.
    if head.len() > 4096 || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text[..text.len() - 4].split("\r\n").skip(1);
    let bodiless = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("content-length") && value.trim() == "0"
        })
    });
    bodiless.then_some(status)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn only_hypers_bodiless_refusals_are_replaced() {
        let refusal = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 10:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(replacement_for(refusal).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(answer.contains("\r\ndate: Wed, 02 Dec 2026 10:00:00 GMT\r\n"));
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "headers_too_large");

        for kept in [
            // Our own answers carry a body.
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 57\r\n\r\n"[..],
            // Not one of hyper's automatic statuses.
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            // Bytes after the head: not a bodiless answer.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nx",
            // A body chunk that merely starts like a status line.
            b"HTTP/1.1 414 is what the host said",
            b"",
        ] {
            assert!(
                replacement_for(kept).is_none(),
                "{}",
                String::from_utf8_lossy(kept)
            );
        }
    }

    async fn serve() -> SocketAddr {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = JsonErrorListener::new(tcp);
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let app = Router::new().route("/", get(|| async { "hello" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server may answer (and close) before it has read the whole request.
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("the server answers within 10 s")
            .ok();
        String::from_utf8_lossy(&answer).into_owned()
    }

    fn json_error(answer: &str, status: &str, code: &str) {
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], code, "{body}");
        assert!(json["error"]["message"].as_str().unwrap().len() > 10);
    }

    #[tokio::test]
    async fn refusals_of_the_http_layer_are_json() {
        let addr = serve().await;
        let long_uri = format!("GET /{} HTTP/1.1\r\nhost: a\r\n\r\n", "a".repeat(70_000));
        json_error(
            &exchange(addr, long_uri.as_bytes()).await,
            "414",
            "uri_too_long",
        );

        let mut many = String::from("GET / HTTP/1.1\r\nhost: a\r\n");
        for i in 0..150 {
            many.push_str(&format!("x-h{i}: v\r\n"));
        }
        many.push_str("\r\n");
        json_error(
            &exchange(addr, many.as_bytes()).await,
            "431",
            "headers_too_large",
        );

        json_error(
            &exchange(addr, b"GET / HTTP/1.1\r\nbad header\r\n\r\n").await,
            "400",
            "bad_request",
        );

        // Ordinary requests, two on one connection, are untouched.
        let ok = exchange(
            addr,
            b"GET / HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(ok.matches("HTTP/1.1 200 OK").count(), 2, "{ok}");
        assert_eq!(ok.matches("hello").count(), 2, "{ok}");
    }
}
