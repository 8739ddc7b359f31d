//! i'mport's notifications (`notice_url`): posted, as i'mport posts them, on every approval (`paid`) and on every cancel made in the console (`cancelled`), never on an ordinary decline nor on an API cancel; each post logged (`GET /__sandbox/notices`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How a notification's body is written (i'mport's console lets the merchant choose).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeFormat {
    /// `application/json`: `{"imp_uid": …, "merchant_uid": …, "status": …}`.
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
}

/// i'mport's timeouts for a first delivery: connect 10 s, read 30 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One notification the sandbox posted (what `GET /__sandbox/notices` returns), in the order they were made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeLogEntry {
    /// 1 for the first notification (since start or the last `/__sandbox/reset`), then 2, 3, ...
    pub seq: u64,
    /// When the payment changed (the notification was queued), in milliseconds since the UNIX epoch.
    pub queued_at_ms: i64,
    /// The payment's imp_uid.
    pub imp_uid: String,
    /// The payment's merchant_uid.
    pub merchant_uid: String,
    /// `paid` or `cancelled`.
    pub status: String,
    /// A cancel's id (its `cancel_history` entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_id: Option<String>,
    /// The receiver's HTTP status, once it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why it was not delivered (no connection, no answer), if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where notifications go: `http://HOST:PORT/PATH`, parsed once.
#[derive(Clone, Debug)]
struct Target {
    /// `HOST:PORT`, for the connection and the `Host` header.
    authority: String,
    path: String,
}

/// Parses `notice_url`: `http://` only (the sandbox runs beside its receiver), a host with a port, any path.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    target(url).map(|_| ())
}

fn target(url: &str) -> Result<Target, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("notice_url {url:?} must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let port_ok = authority.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !port_ok || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("notice_url {url:?} must be http://HOST:PORT/PATH"));
    }
    Ok(Target { authority: authority.to_string(), path: path.to_string() })
}

/// Posts notifications one after the other, on a thread of its own (so a slow receiver never holds a charge), and
/// logs each.
pub(crate) struct Notifier {
    tx: Mutex<mpsc::Sender<u64>>,
    log: Arc<Mutex<Vec<NoticeLogEntry>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Notifier {
    /// A notifier posting to `url` (checked with the config) in `format`.
    pub(crate) fn start(url: &str, format: NoticeFormat) -> anyhow::Result<Notifier> {
        let target = target(url).map_err(|e| anyhow::anyhow!(e))?;
        let (tx, rx) = mpsc::channel::<u64>();
        let log: Arc<Mutex<Vec<NoticeLogEntry>>> = Arc::default();
        let posted = log.clone();
        std::thread::Builder::new().name("billd-sandbox-notices".into()).spawn(move || {
            // Ends when the sandbox's state (the sender) is dropped.
            while let Ok(seq) = rx.recv() {
                let Some(entry) = lock(&posted).iter().find(|e| e.seq == seq).cloned() else { continue };
                let result = post(&target, format, &entry);
                if let Some(e) = lock(&posted).iter_mut().find(|e| e.seq == seq) {
                    match result {
                        Ok(status) => e.http_status = Some(status),
                        Err(why) => e.error = Some(why),
                    }
                }
            }
        })?;
        Ok(Notifier { tx: Mutex::new(tx), log })
    }

    /// Queues a notification of `status` for a payment (`cancellation_id`: a cancel's).
    pub(crate) fn notify(&self, imp_uid: &str, merchant_uid: &str, status: &str, cancellation_id: Option<&str>) {
        let seq = {
            let mut log = lock(&self.log);
            let seq = log.last().map_or(1, |e| e.seq + 1);
            log.push(NoticeLogEntry {
                seq,
                queued_at_ms: now_ms(),
                imp_uid: imp_uid.to_string(),
                merchant_uid: merchant_uid.to_string(),
                status: status.to_string(),
                cancellation_id: cancellation_id.map(str::to_string),
                http_status: None,
                error: None,
            });
            seq
        };
        let _ = lock(&self.tx).send(seq);
    }

    pub(crate) fn entries(&self) -> Vec<NoticeLogEntry> {
        lock(&self.log).clone()
    }

    pub(crate) fn clear(&self) {
        lock(&self.log).clear();
    }
}

/// One HTTP/1.1 POST of `entry`, as i'mport makes it; the receiver's status code.
fn post(target: &Target, format: NoticeFormat, entry: &NoticeLogEntry) -> Result<u16, String> {
    let mut fields = vec![
        ("imp_uid", entry.imp_uid.as_str()),
        ("merchant_uid", entry.merchant_uid.as_str()),
        ("status", entry.status.as_str()),
    ];
    if let Some(id) = &entry.cancellation_id {
        fields.push(("cancellation_id", id));
    }
    let (content_type, body) = match format {
        NoticeFormat::Json => {
            let map: serde_json::Map<String, serde_json::Value> =
                fields.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
            ("application/json", serde_json::Value::Object(map).to_string())
        }
        NoticeFormat::Form => (
            "application/x-www-form-urlencoded",
            serde_urlencoded::to_string(&fields).map_err(|e| format!("cannot encode the form: {e}"))?,
        ),
    };
    let addr = target
        .authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.authority))?
        .next()
        .ok_or_else(|| format!("{} resolves to nothing", target.authority))?;
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| format!("cannot connect: {e}"))?;
    stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(READ_TIMEOUT)).map_err(|e| e.to_string())?;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: billd-sandbox (i'mport notification)\r\nContent-Type: \
         {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        target.path,
        target.authority,
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("cannot send: {e}"))?;
    let mut answer = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut answer);
    let head = String::from_utf8_lossy(&answer);
    head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| "no HTTP answer".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_url_is_http_with_a_port() {
        assert!(check_url("http://127.0.0.1:8789/iamport/notice").is_ok());
        assert_eq!(target("http://localhost:80").unwrap().path, "/");
        for bad in ["https://x:1/", "http://x/", "http://:80/", "ftp://x:1", "http://x:1/a b", "http://x:99999/"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
