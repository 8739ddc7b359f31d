//! i'mport refunds: `POST /payments/cancel` (through the one path of every request that moves money) and `GET /payments/{imp_uid}` (a payment's refunds).

use super::classify::{classify_refund, parse_refunds, snippet};
use super::{Iamport, Sent, describe};
use crate::gateway::{RefundOutcome, RefundRequest, RefundsLookup};

/// The JSON body of a `cancel` request (a refund).
#[derive(serde::Serialize)]
struct CancelBody<'a> {
    imp_uid: &'a str,
    amount: i64,
    checksum: i64,
    reason: &'a str,
}

impl Iamport {
    /// `POST /payments/cancel` for `req`, through the one path of every request that moves money
    /// ([`Iamport::send_after_go`]).
    pub(crate) async fn cancel(&self, req: &RefundRequest, go: impl Future<Output = bool>) -> Option<RefundOutcome> {
        let body =
            CancelBody { imp_uid: &req.imp_uid, amount: req.amount, checksum: req.checksum, reason: &req.reason };
        let url = match self.url(&["payments", "cancel"]) {
            Ok(u) => u,
            Err(e) => return Some(RefundOutcome::Transient(e)),
        };
        // A refund's lookup carries its imp_uid in the URL: one it could not carry is refused before sending.
        if let Err(e) = crate::ids::path_segment(&req.imp_uid) {
            return Some(RefundOutcome::Transient(format!("not sent: {e}")));
        }
        let sent = self.send_after_go(self.http.post(url).json(&body), go).await?;
        Some(classify_refund(sent, req, self.timeout, &self.sent()))
    }

    /// `GET /payments/{imp_uid}`: the payment's refunds, if the answer is that payment (`imp_uid` and
    /// `merchant_uid`).
    pub(crate) async fn payment_refunds(&self, imp_uid: &str, merchant_uid: &str) -> RefundsLookup {
        let url = match self.url(&["payments", imp_uid]) {
            Ok(u) => u,
            Err(e) => return RefundsLookup::Error(e),
        };
        let sent = match self.authed(|| self.http.get(url.clone())).await {
            Ok(s) => s,
            Err(e) => return RefundsLookup::Error(e),
        };
        let red = self.sent();
        match sent {
            Sent::Error(e) => RefundsLookup::Error(describe(&e)),
            Sent::Refused(why) => RefundsLookup::Error(why),
            Sent::Response(404, _) => RefundsLookup::NotFound,
            Sent::Response(200, text) => match parse_refunds(&text, &red) {
                Ok(Some(p)) if p.imp_uid == imp_uid && p.merchant_uid == merchant_uid => RefundsLookup::Found(p),
                Ok(Some(_)) => RefundsLookup::Error(format!(
                    "lookup of {imp_uid} answered another payment (another imp_uid or merchant_uid than {})",
                    crate::text::cell(merchant_uid)
                )),
                Ok(None) => RefundsLookup::Error(format!("lookup answered no payment: {}", snippet(&red, &text))),
                Err(e) => RefundsLookup::Error(e),
            },
            Sent::Response(status, text) => {
                RefundsLookup::Error(format!("lookup: HTTP {status}: {}", snippet(&red, &text)))
            }
        }
    }
}
