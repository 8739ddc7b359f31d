//! The request log: every `again`, `onetime` and `cancel` as it arrived, and whether it repeated a paid or in-flight merchant_uid.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Which endpoint a logged request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /subscribe/payments/again`.
    Again,
    /// `POST /subscribe/payments/onetime`.
    Onetime,
    /// `POST /payments/cancel`.
    Cancel,
}

/// What the sandbox already knew about a request's merchant_uid when the request arrived.
///
/// For `again` and `onetime`:
///
/// - [`AtArrival::Paid`]: the merchant_uid already had a paid payment (even one refunded since). i'mport refuses
///   such a request, so it charges nothing, but a client that sends it has resent a charge it should have
///   known was made.
/// - [`AtArrival::InFlight`]: another request for the same merchant_uid had arrived and was still being
///   processed: its charge was not yet made or refused (under [`crate::Fault::ChargeLater`] or
///   [`crate::Fault::ChargeLaterRandom`]). i'mport would charge both.
/// - [`AtArrival::New`]: neither. A merchant_uid whose earlier attempts were all declined is `New`: trying it
///   again is legitimate dunning, which i'mport allows.
///
/// For `cancel`, the request is classified by the payment it names (by `imp_uid`, else the latest paid
/// attempt with that `merchant_uid`, the one the cancel would refund): `Paid` when that payment was already
/// fully refunded (the cancel repeats one already done), `InFlight` when another request for its merchant_uid
/// (a charge or a cancel) was still being processed, `New` otherwise (including a cancel that names nothing,
/// and a partial refund of a payment with a balance left).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtArrival {
    /// Nothing paid, nothing in flight: a first request or a legitimate retry of a declined one.
    New,
    /// The merchant_uid was already paid (for `cancel`: the payment it names was already fully refunded).
    Paid,
    /// Another request for the same merchant_uid was still being processed.
    InFlight,
}

/// One `again`, `onetime` or `cancel` request as it arrived (what `GET /__sandbox/requests` returns).
///
/// It is logged when its body has been read, before the rate limit, the token check, faults or any refusal,
/// so a request that charged nothing is logged too. Fields the body did not carry (or carried in a form the
/// sandbox refuses) are `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLogEntry {
    /// 1 for the first request logged (since start or the last `/__sandbox/reset`), then 2, 3, ...
    pub seq: u64,
    /// Arrival, in milliseconds since the UNIX epoch.
    pub arrived_at_ms: i64,
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The request's `merchant_uid`; for a `cancel` by `imp_uid` alone, the merchant_uid of the payment it names.
    pub merchant_uid: Option<String>,
    /// The request's `amount`.
    pub amount: Option<i64>,
    /// The request's `customer_uid` (`cancel`: the named payment's billing key, if any).
    pub customer_uid: Option<String>,
    /// `cancel` only: the `imp_uid` it names, if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imp_uid: Option<String>,
    /// What the sandbox knew about the merchant_uid on arrival.
    pub at_arrival: AtArrival,
}

/// The fields of one request that the log keeps (card data never is).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Arrived {
    pub merchant_uid: Option<String>,
    pub amount: Option<i64>,
    pub customer_uid: Option<String>,
    pub imp_uid: Option<String>,
}

/// The log and the requests still being processed, counted by merchant_uid.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: Vec<RequestLogEntry>,
    in_flight: HashMap<String, u32>,
}

impl RequestLog {
    /// Logs a request that arrived at `now_ms` and counts it as in flight until [`RequestLog::settled`].
    /// `done` says whether what it asks for was already done (a paid merchant_uid; for a cancel, a payment
    /// already fully refunded). Returns the classification.
    pub(crate) fn arrive(&mut self, now_ms: i64, endpoint: Endpoint, fields: Arrived, done: bool) -> AtArrival {
        let in_flight = fields.merchant_uid.as_ref().is_some_and(|m| self.in_flight.contains_key(m));
        let at_arrival = if done {
            AtArrival::Paid
        } else if in_flight {
            AtArrival::InFlight
        } else {
            AtArrival::New
        };
        if let Some(m) = &fields.merchant_uid {
            *self.in_flight.entry(m.clone()).or_insert(0) += 1;
        }
        self.entries.push(RequestLogEntry {
            seq: self.entries.len() as u64 + 1,
            arrived_at_ms: now_ms,
            endpoint,
            merchant_uid: fields.merchant_uid,
            amount: fields.amount,
            customer_uid: fields.customer_uid,
            imp_uid: fields.imp_uid,
            at_arrival,
        });
        at_arrival
    }

    /// A request for `merchant_uid` is no longer in flight: its charge (or cancel) was made or refused, or it
    /// was refused before that (token, rate limit, a before-charge fault, a malformed body).
    pub(crate) fn settled(&mut self, merchant_uid: &str) {
        if let Some(n) = self.in_flight.get_mut(merchant_uid) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(merchant_uid);
            }
        }
    }

    /// Requests still in flight.
    pub(crate) fn in_progress(&self) -> usize {
        self.in_flight.values().map(|&n| n as usize).sum()
    }

    pub(crate) fn entries(&self) -> Vec<RequestLogEntry> {
        self.entries.clone()
    }

    /// Forgets the logged requests (`/__sandbox/reset`); requests still in flight stay counted, since they
    /// are still being processed.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(m: &str) -> Arrived {
        Arrived { merchant_uid: Some(m.to_string()), amount: Some(9900), customer_uid: Some("c".into()), imp_uid: None }
    }

    #[test]
    fn new_paid_and_in_flight() {
        let mut log = RequestLog::default();
        assert_eq!(log.arrive(1, Endpoint::Again, req("m1"), false), AtArrival::New);
        // Still in flight: a second request for m1 is a repeat, one for m2 is not.
        assert_eq!(log.arrive(2, Endpoint::Again, req("m1"), false), AtArrival::InFlight);
        assert_eq!(log.arrive(3, Endpoint::Again, req("m2"), false), AtArrival::New);
        log.settled("m1");
        assert_eq!(log.arrive(4, Endpoint::Again, req("m1"), false), AtArrival::InFlight, "one of two still runs");
        assert_eq!(log.in_progress(), 3);
        log.settled("m1");
        log.settled("m1");
        assert_eq!(log.in_progress(), 1, "m2");
        log.settled("m2");
        // Nothing in flight: a declined merchant_uid tried again is new; a paid one is paid.
        assert_eq!(log.arrive(5, Endpoint::Again, req("m1"), false), AtArrival::New);
        assert_eq!(log.arrive(6, Endpoint::Onetime, req("m2"), true), AtArrival::Paid, "paid wins over in flight");
        let e = log.entries();
        assert_eq!(e.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
        assert_eq!((e[5].endpoint, e[5].arrived_at_ms, e[5].amount), (Endpoint::Onetime, 6, Some(9900)));
    }

    #[test]
    fn a_request_without_merchant_uid_is_new_and_never_in_flight() {
        let mut log = RequestLog::default();
        assert_eq!(log.arrive(1, Endpoint::Again, Arrived::default(), false), AtArrival::New);
        assert_eq!(log.arrive(2, Endpoint::Again, Arrived::default(), false), AtArrival::New);
        log.settled("unknown");
    }

    #[test]
    fn clear_forgets_the_entries_not_what_is_in_flight() {
        let mut log = RequestLog::default();
        log.arrive(1, Endpoint::Again, req("m1"), false);
        log.clear();
        assert!(log.entries().is_empty());
        assert_eq!(log.arrive(2, Endpoint::Cancel, req("m1"), false), AtArrival::InFlight);
        assert_eq!(log.entries()[0].seq, 1);
    }

    #[test]
    fn json_shape() {
        let mut log = RequestLog::default();
        log.arrive(1_700_000_000_000, Endpoint::Again, req("m1"), false);
        log.arrive(1_700_000_000_001, Endpoint::Again, req("m1"), false);
        let json = serde_json::to_value(log.entries()).expect("json");
        assert_eq!(
            json[1],
            serde_json::json!({
                "seq": 2, "arrived_at_ms": 1_700_000_000_001i64, "endpoint": "again", "merchant_uid": "m1",
                "amount": 9900, "customer_uid": "c", "at_arrival": "in_flight"
            })
        );
    }
}
