//! Hostile answers to a charge (fault injection): an HTML error page, and answers that are cut off, malformed,
//! oversized, slow, reset mid-body or about another payment. All but [`html_502`] are made from the real answer,
//! after the charge was recorded.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::Fault;
use crate::server::ConnControl;

/// The size [`Fault::HugeBody`] pads an answer to.
const HUGE: usize = 20 << 20;

/// HTTP 502 with an HTML page, as a reverse proxy sends it when the API behind it is down.
pub(crate) fn html_502() -> Response {
    let page = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body><center><h1>502 Bad \
                Gateway</h1></center><hr><center>nginx (sandbox fault: html502, nothing was charged)</center>\n\
                </body></html>\n";
    let mut r = Response::new(Body::from(page));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

/// Whether `fault` is one that [`mangle`] turns an answer into.
pub(crate) fn mangles(fault: &Fault) -> bool {
    matches!(
        fault,
        Fault::TruncatedJson
            | Fault::MissingFields
            | Fault::MistypedFields
            | Fault::HugeBody
            | Fault::Trickle { .. }
            | Fault::ResetMidBody
            | Fault::WrongMerchantUid
            | Fault::WrongAmount
    )
}

/// Turns the real answer to a charge into the hostile one `fault` asks for.
pub(crate) async fn mangle(fault: &Fault, answer: Response, conn: Option<ConnControl>) -> Response {
    let (parts, body) = answer.into_parts();
    let status = parts.status;
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let mut envelope: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let payment = envelope.get_mut("response").and_then(Value::as_object_mut);
    match fault {
        Fault::TruncatedJson => json(status, Body::from(bytes.slice(..bytes.len() / 2))),
        Fault::MissingFields => {
            if let Some(p) = payment {
                p.remove("status");
                p.remove("amount");
            }
            json(status, Body::from(envelope.to_string()))
        }
        Fault::MistypedFields => {
            if let Some(p) = payment {
                let amount = p.get("amount").map(Value::to_string).unwrap_or_default();
                p.insert("amount".into(), Value::String(amount));
                p.insert("status".into(), Value::from(1));
            }
            json(status, Body::from(envelope.to_string()))
        }
        Fault::WrongMerchantUid => {
            if let Some(p) = payment {
                let other = format!("{}-other", p.get("merchant_uid").and_then(Value::as_str).unwrap_or("x"));
                p.insert("merchant_uid".into(), Value::String(other));
                p.insert("status".into(), Value::from("paid"));
            }
            json(status, Body::from(envelope.to_string()))
        }
        Fault::WrongAmount => {
            if let Some(p) = payment {
                let amount = p.get("amount").and_then(Value::as_i64).unwrap_or(0);
                p.insert("amount".into(), Value::from(amount + 1000));
                p.insert("status".into(), Value::from("paid"));
            }
            json(status, Body::from(envelope.to_string()))
        }
        Fault::HugeBody => {
            // A valid answer whose payment carries a 20 MiB `padding` field, streamed (chunked, no length).
            if let Some(p) = payment {
                p.insert("padding".into(), Value::from("\u{1}"));
            }
            let text = envelope.to_string();
            let (head, tail) = text.split_once("\\u0001").unwrap_or((&text, ""));
            let (head, tail) = (Bytes::from(head.to_owned()), Bytes::from(tail.to_owned()));
            let (tx, body) = channel();
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 64 << 10]);
                let _ = tx.send(Ok(head)).await;
                for _ in 0..HUGE / chunk.len() {
                    if tx.send(Ok(chunk.clone())).await.is_err() {
                        return; // the client stopped reading
                    }
                }
                let _ = tx.send(Ok(tail)).await;
            });
            json(status, body)
        }
        Fault::Trickle { every } => {
            let every = *every;
            let (tx, body) = channel();
            tokio::spawn(async move {
                for i in 0..bytes.len() {
                    if tx.send(Ok(bytes.slice(i..i + 1))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(every).await;
                }
            });
            json(status, body)
        }
        Fault::ResetMidBody => {
            let full = bytes.len();
            let (tx, body) = channel();
            tokio::spawn(async move {
                let _ = tx.send(Ok(bytes.slice(..full / 2))).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(Err(std::io::Error::other("sandbox fault: reset_mid_body"))).await;
                if let Some(conn) = conn {
                    conn.drop_connection();
                }
            });
            let mut r = json(status, body);
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(full));
            r
        }
        _ => Response::from_parts(parts, Body::from(bytes)),
    }
}

fn json(status: StatusCode, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    r
}

type Chunk = Result<Bytes, std::io::Error>;

/// A body fed chunk by chunk from a task (an error chunk aborts the response mid-body).
struct Channel(mpsc::Receiver<Chunk>);

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|m| m.map(|r| r.map(Frame::data)))
    }
}

fn channel() -> (mpsc::Sender<Chunk>, Body) {
    let (tx, rx) = mpsc::channel(4);
    (tx, Body::new(Channel(rx)))
}
