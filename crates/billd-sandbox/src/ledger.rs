//! The sandbox's state and business rules: billing keys, payment attempts, cancels and lookups (no I/O; the clock is passed in).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use serde::{Deserialize, Serialize};

use crate::cards::{self, CardClass, CardError, CardFacts};

/// `pg_provider` of every payment and billing key.
pub(crate) const PG_PROVIDER: &str = "kcp";
/// `pg_id` (PG merchant id) of every payment and billing key.
pub(crate) const PG_ID: &str = "BA001";

/// One payment attempt as the sandbox recorded it (what `GET /__sandbox/payments` returns).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// i'mport transaction id, `imp_` + 12 digits.
    pub imp_uid: String,
    /// The merchant's order id.
    pub merchant_uid: String,
    /// The billing key charged or issued, if any.
    pub customer_uid: Option<String>,
    /// Amount requested (and charged when `status` is `paid` or `cancelled`).
    pub amount: i64,
    /// Amount refunded so far (partial or full cancels).
    pub cancel_amount: i64,
    /// Currency, `KRW` unless the request said otherwise.
    pub currency: String,
    /// Order name.
    pub name: Option<String>,
    /// `paid`, `failed` or `cancelled` (fully refunded).
    pub status: String,
    /// Decline reason when `failed`.
    pub fail_reason: Option<String>,
    /// UNIX seconds.
    pub started_at: i64,
    /// UNIX seconds, 0 unless paid.
    pub paid_at: i64,
    /// UNIX seconds, 0 unless failed.
    pub failed_at: i64,
    /// UNIX seconds of the latest cancel, 0 when none.
    pub cancelled_at: i64,
    /// Masked card number (`424242******4242`).
    pub card_number_masked: Option<String>,
}

/// Payment status as the API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Ready,
    Paid,
    Failed,
    Cancelled,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Paid => "paid",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Status> {
        match s {
            "ready" => Some(Status::Ready),
            "paid" => Some(Status::Paid),
            "failed" => Some(Status::Failed),
            "cancelled" => Some(Status::Cancelled),
            _ => None,
        }
    }
}

/// One entry of `cancel_history` (`PaymentCancelAnnotation`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct CancelRecord {
    pub pg_tid: String,
    pub amount: i64,
    pub cancelled_at: i64,
    pub reason: String,
    pub cancellation_id: String,
}

/// A payment attempt, serialized exactly as the API's `PaymentAnnotation`.
///
/// Optional fields without a value are omitted, except those the spec says are `null`
/// when not applicable (`fail_reason`, `cancel_reason`, `customer_uid_usage`, `card_type`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Payment {
    pub imp_uid: String,
    pub merchant_uid: String,
    pub pay_method: &'static str,
    pub channel: &'static str,
    pub pg_provider: &'static str,
    pub pg_tid: String,
    pub pg_id: &'static str,
    pub sandbox: bool,
    pub escrow: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_num: Option<String>,
    pub card_code: &'static str,
    pub card_name: &'static str,
    pub card_quota: i64,
    pub card_number: String,
    pub card_type: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub amount: i64,
    pub cancel_amount: i64,
    pub currency: String,
    #[serde(flatten)]
    pub buyer: Buyer,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_data: Option<String>,
    pub user_agent: String,
    pub status: Status,
    pub started_at: i64,
    pub paid_at: i64,
    pub failed_at: i64,
    pub cancelled_at: i64,
    pub fail_reason: Option<String>,
    pub cancel_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt_url: Option<String>,
    pub cancel_history: Vec<CancelRecord>,
    pub cancel_receipt_urls: Vec<String>,
    pub cash_receipt_issued: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_uid: Option<String>,
    pub customer_uid_usage: Option<&'static str>,
    /// Latest change, for `sorting=updated`.
    #[serde(skip)]
    pub updated_at: i64,
}

impl Payment {
    fn entry(&self) -> LedgerEntry {
        LedgerEntry {
            imp_uid: self.imp_uid.clone(),
            merchant_uid: self.merchant_uid.clone(),
            customer_uid: self.customer_uid.clone(),
            amount: self.amount,
            cancel_amount: self.cancel_amount,
            currency: self.currency.clone(),
            name: self.name.clone(),
            status: self.status.as_str().to_string(),
            fail_reason: self.fail_reason.clone(),
            started_at: self.started_at,
            paid_at: self.paid_at,
            failed_at: self.failed_at,
            cancelled_at: self.cancelled_at,
            card_number_masked: Some(self.card_number.clone()),
        }
    }
}

/// `buyer_*` fields of a payment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Buyer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_tel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_postcode: Option<String>,
}

/// `customer_*` fields stored with a billing key.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct CustomerInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_tel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_postcode: Option<String>,
}

impl From<&Buyer> for CustomerInfo {
    fn from(b: &Buyer) -> Self {
        CustomerInfo {
            customer_id: None,
            customer_name: b.buyer_name.clone(),
            customer_tel: b.buyer_tel.clone(),
            customer_email: b.buyer_email.clone(),
            customer_addr: b.buyer_addr.clone(),
            customer_postcode: b.buyer_postcode.clone(),
        }
    }
}

/// A billing key, serialized as the API's `CustomerAnnotation`. Only the masked card is kept.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Customer {
    pub customer_uid: String,
    pub pg_provider: &'static str,
    pub pg_id: &'static str,
    pub sandbox: bool,
    pub card_name: &'static str,
    pub card_code: &'static str,
    pub card_number: String,
    pub card_type: Option<i64>,
    #[serde(flatten)]
    pub info: CustomerInfo,
    pub inserted: i64,
    pub updated: i64,
    /// How charges on this key are answered.
    #[serde(skip)]
    pub class: CardClass,
    /// Declines left for a `DeclineFirst` key.
    #[serde(skip)]
    pub declines_left: u32,
}

/// Card data of a billing-key issue or key-in payment.
#[derive(Clone, Default)]
pub(crate) struct CardInput {
    pub card_number: String,
    pub expiry: String,
    pub birth: Option<String>,
    pub pwd_2digit: Option<String>,
}

/// A validated charge request (`again` or `onetime`).
#[derive(Clone, Debug, Default)]
pub(crate) struct ChargeRequest {
    pub merchant_uid: String,
    pub amount: i64,
    pub currency: String,
    pub name: Option<String>,
    pub buyer: Buyer,
    pub custom_data: Option<String>,
    pub card_quota: i64,
    /// The caller's `User-Agent` (the real API records it).
    pub user_agent: String,
    /// Receipt URLs are `{receipt_base}/{imp_uid}` (paid payments only).
    pub receipt_base: Option<String>,
}

/// A validated `POST /payments/cancel`.
#[derive(Clone, Debug, Default)]
pub(crate) struct CancelRequest {
    pub imp_uid: Option<String>,
    pub merchant_uid: Option<String>,
    /// `None` or 0 = everything still cancellable.
    pub amount: Option<i64>,
    pub checksum: Option<i64>,
    pub reason: Option<String>,
}

/// `sorting` of find / findAll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sorting {
    Started { desc: bool },
    Paid { desc: bool },
    Updated { desc: bool },
}

impl Sorting {
    pub(crate) fn parse(s: &str) -> Option<Sorting> {
        let (desc, key) = match s.strip_prefix('-') {
            Some(k) => (true, k),
            None => (false, s),
        };
        match key {
            "started" => Some(Sorting::Started { desc }),
            "paid" => Some(Sorting::Paid { desc }),
            "updated" => Some(Sorting::Updated { desc }),
            _ => None,
        }
    }
}

impl Default for Sorting {
    fn default() -> Self {
        Sorting::Started { desc: true }
    }
}

/// `PagedPaymentAnnotation`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Paged {
    pub total: usize,
    pub previous: usize,
    pub next: usize,
    pub list: Vec<Payment>,
}

/// A refusal: the HTTP status and the envelope's `code` and `message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub http: u16,
    pub code: i64,
    pub message: String,
}

impl Refusal {
    /// HTTP 200 with a non-zero code (the API's business failures).
    pub(crate) fn business(code: i64, message: impl Into<String>) -> Refusal {
        Refusal { http: 200, code, message: message.into() }
    }
}

/// Message for `again` on an unknown billing key (observed verbatim from the real API).
pub(crate) const MSG_UNKNOWN_CUSTOMER: &str = "등록되지 않은 구매자입니다.";
/// Message for a failed billing-key issue (observed from the real API).
pub(crate) const MSG_KEY_ISSUE_FAILED: &str = "카드정보 인증 및 빌키 발급에 실패하였습니다.";
/// Message for a cancel that finds nothing (observed from the real API).
pub(crate) const MSG_NOTHING_TO_CANCEL: &str = "취소할 결제건이 존재하지 않습니다.";
/// Message for an unknown imp_uid / merchant_uid (the spec's own example).
pub(crate) const MSG_NO_PAYMENT: &str = "존재하지 않는 결제정보입니다.";
/// Message for a paid merchant_uid presented again (the real text is not public).
pub(crate) const MSG_ALREADY_PAID: &str = "이미 결제가 완료된 merchant_uid입니다.";

/// All state of one sandbox.
pub(crate) struct Ledger {
    payments: Payments,
    customers: HashMap<String, Customer>,
    /// Charges so far of `decline_first(n)` cards presented without a billing key, by `n`.
    keyless_attempts: HashMap<u32, u32>,
    /// merchant_uids whose next charge is already past the paid check (`Fault::ChargeLater`: checked on arrival,
    /// charged later).
    checked: HashSet<String>,
    seq: u64,
}

impl Ledger {
    /// An empty ledger whose `imp_uid`s start at `first_imp` (12 digits).
    pub(crate) fn new(first_imp: u64) -> Ledger {
        Ledger {
            payments: Payments::new(first_imp),
            customers: HashMap::new(),
            keyless_attempts: HashMap::new(),
            checked: HashSet::new(),
            seq: 0,
        }
    }

    /// Every attempt in the order they were made.
    pub(crate) fn entries(&self) -> Vec<LedgerEntry> {
        self.payments.iter().map(Payment::entry).collect()
    }

    /// `POST /subscribe/customers/{customer_uid}`: validates the card and stores (or replaces) the key.
    pub(crate) fn issue_key(
        &mut self,
        now: i64,
        customer_uid: &str,
        card: &CardInput,
        info: CustomerInfo,
    ) -> Result<Customer, Refusal> {
        let (digits, facts) = check_card(now, card)
            .map_err(|why| Refusal::business(-1, format!("{MSG_KEY_ISSUE_FAILED} [sandbox: {why}]")))?;
        Ok(self.store_key(now, customer_uid, &digits, facts, info).clone())
    }

    fn store_key(
        &mut self,
        now: i64,
        customer_uid: &str,
        digits: &str,
        facts: CardFacts,
        info: CustomerInfo,
    ) -> &Customer {
        let declines_left = match facts.class {
            CardClass::DeclineFirst(n) => n,
            _ => 0,
        };
        let previous = self.customers.get(customer_uid).map(|c| c.inserted);
        let customer = Customer {
            customer_uid: customer_uid.to_string(),
            pg_provider: PG_PROVIDER,
            pg_id: PG_ID,
            sandbox: true,
            card_name: facts.company.name,
            card_code: facts.company.code,
            card_number: cards::mask(digits),
            card_type: Some(0),
            info,
            inserted: previous.unwrap_or(now),
            updated: if previous.is_some() { now } else { 0 },
            class: facts.class,
            declines_left,
        };
        self.customers.insert(customer_uid.to_string(), customer);
        &self.customers[customer_uid]
    }

    /// Registers a key from a bare card number (seeds and [`crate::Sandbox::register_customer`]):
    /// only the number is checked, there is no expiry or birth date to check.
    pub(crate) fn seed_key(
        &mut self,
        now: i64,
        customer_uid: &str,
        card_number: &str,
    ) -> Result<Customer, CardProblem> {
        let (digits, facts) = cards::inspect(card_number).map_err(CardProblem::Number)?;
        Ok(self.store_key(now, customer_uid, &digits, facts, CustomerInfo::default()).clone())
    }

    pub(crate) fn customer(&self, customer_uid: &str) -> Option<&Customer> {
        self.customers.get(customer_uid)
    }

    pub(crate) fn delete_customer(&mut self, customer_uid: &str) -> Option<Customer> {
        self.customers.remove(customer_uid)
    }

    /// The paid check of a charge made later (`Fault::ChargeLater`), as i'mport makes it: on arrival.
    pub(crate) fn check_on_arrival(&self, merchant_uid: &str) -> Result<(), Refusal> {
        self.paid_check(merchant_uid)
    }

    /// The next charge of `merchant_uid` (a `Fault::ChargeLater` one, made now) was checked on arrival and is
    /// not checked again: a second request for the same merchant_uid that came meanwhile may have been charged
    /// too (i'mport refuses a merchant_uid only once it is paid).
    pub(crate) fn checked_on_arrival(&mut self, merchant_uid: &str) {
        self.checked.insert(merchant_uid.to_string());
    }

    /// After that charge (made or refused for another reason): later requests are checked as usual.
    pub(crate) fn arrival_check_done(&mut self, merchant_uid: &str) {
        self.checked.remove(merchant_uid);
    }

    /// `POST /subscribe/payments/again`.
    pub(crate) fn again(&mut self, now: i64, customer_uid: &str, req: ChargeRequest) -> Result<Payment, Refusal> {
        if !self.customers.contains_key(customer_uid) {
            return Err(Refusal::business(-1, MSG_UNKNOWN_CUSTOMER));
        }
        self.refuse_if_paid(&req.merchant_uid)?;
        let Some(customer) = self.customers.get_mut(customer_uid) else {
            return Err(Refusal::business(-1, MSG_UNKNOWN_CUSTOMER));
        };
        let fail_reason = charge_key(customer);
        let card = KeyCard::of(customer);
        Ok(self.record(now, req, card, Some(customer_uid.to_string()), Some("payment"), fail_reason))
    }

    /// `POST /subscribe/payments/onetime`: key-in payment; with `customer_uid` the card is also
    /// stored as a billing key (before the charge, so it stays stored when the charge is declined).
    pub(crate) fn onetime(
        &mut self,
        now: i64,
        customer_uid: Option<&str>,
        card: &CardInput,
        req: ChargeRequest,
    ) -> Result<Payment, Refusal> {
        let (digits, facts) = check_card(now, card).map_err(|why| {
            let base = match why {
                CardProblem::Number(_) => "유효하지않은 카드번호를 입력하셨습니다.",
                _ => "카드정보 인증에 실패하였습니다.",
            };
            Refusal::business(-1, format!("{base} [sandbox: {why}]"))
        })?;
        self.refuse_if_paid(&req.merchant_uid)?;
        match customer_uid {
            Some(uid) => {
                let info = CustomerInfo::from(&req.buyer);
                self.store_key(now, uid, &digits, facts, info);
                let Some(customer) = self.customers.get_mut(uid) else {
                    return Err(Refusal::business(-1, MSG_KEY_ISSUE_FAILED));
                };
                let fail_reason = charge_key(customer);
                let card = KeyCard::of(customer);
                Ok(self.record(now, req, card, Some(uid.to_string()), Some("issue"), fail_reason))
            }
            None => {
                let fail_reason = match facts.class {
                    CardClass::DeclineFirst(n) => {
                        let tries = self.keyless_attempts.entry(n).or_insert(0);
                        *tries += 1;
                        (*tries <= n).then_some(cards::REASON_INSUFFICIENT_FUNDS)
                    }
                    class => class.decline_reason(),
                };
                let card = KeyCard { masked: cards::mask(&digits), code: facts.company.code, name: facts.company.name };
                Ok(self.record(now, req, card, None, None, fail_reason))
            }
        }
    }

    /// Refuses a merchant_uid that is already paid. A charge that passed this check on arrival
    /// ([`Ledger::check_on_arrival`]) is not checked again when it is made.
    fn refuse_if_paid(&mut self, merchant_uid: &str) -> Result<(), Refusal> {
        if self.checked.remove(merchant_uid) {
            return Ok(());
        }
        self.paid_check(merchant_uid)
    }

    /// Whether `merchant_uid` has a paid payment (one refunded since counts: it cannot be paid again).
    pub(crate) fn is_paid(&self, merchant_uid: &str) -> bool {
        self.payments.with_merchant(merchant_uid).iter().any(|&i| self.payments[i].paid_at > 0)
    }

    /// The payment a cancel names, as [`Ledger::cancel`] picks it (by `imp_uid`, else the latest paid attempt
    /// with that `merchant_uid`): its merchant_uid, billing key, and whether it is already fully refunded.
    pub(crate) fn cancel_target(
        &self,
        imp_uid: Option<&str>,
        merchant_uid: Option<&str>,
    ) -> Option<(String, Option<String>, bool)> {
        let index = self.cancel_index(imp_uid, merchant_uid)?;
        let p = &self.payments[index];
        Some((p.merchant_uid.clone(), p.customer_uid.clone(), p.status == Status::Cancelled))
    }

    fn cancel_index(&self, imp_uid: Option<&str>, merchant_uid: Option<&str>) -> Option<usize> {
        match (imp_uid, merchant_uid) {
            (Some(imp), _) => self.payments.index_of(imp),
            (None, Some(m)) => {
                self.payments.with_merchant(m).iter().rev().copied().find(|&i| self.payments[i].paid_at > 0)
            }
            (None, None) => None,
        }
    }

    fn paid_check(&self, merchant_uid: &str) -> Result<(), Refusal> {
        if self.is_paid(merchant_uid) {
            Err(Refusal::business(1, format!("{MSG_ALREADY_PAID} ({merchant_uid})")))
        } else {
            Ok(())
        }
    }

    fn record(
        &mut self,
        now: i64,
        req: ChargeRequest,
        card: KeyCard,
        customer_uid: Option<String>,
        usage: Option<&'static str>,
        fail_reason: Option<&'static str>,
    ) -> Payment {
        self.seq += 1;
        let imp_uid = self.payments.next_imp_uid();
        let paid = fail_reason.is_none();
        let payment = Payment {
            imp_uid: imp_uid.clone(),
            merchant_uid: req.merchant_uid.clone(),
            pay_method: "card",
            channel: "api",
            pg_provider: PG_PROVIDER,
            pg_tid: format!("SBX{now}{:08}", self.seq % 100_000_000),
            pg_id: PG_ID,
            sandbox: true,
            escrow: false,
            apply_num: paid.then(|| format!("{:08}", (self.seq * 7919) % 100_000_000)),
            card_code: card.code,
            card_name: card.name,
            card_quota: req.card_quota,
            card_number: card.masked,
            card_type: Some(0),
            name: req.name,
            amount: req.amount,
            cancel_amount: 0,
            currency: req.currency,
            buyer: req.buyer,
            custom_data: req.custom_data,
            user_agent: req.user_agent,
            status: if paid { Status::Paid } else { Status::Failed },
            started_at: now,
            paid_at: if paid { now } else { 0 },
            failed_at: if paid { 0 } else { now },
            cancelled_at: 0,
            fail_reason: fail_reason.map(str::to_string),
            cancel_reason: None,
            receipt_url: match (&req.receipt_base, paid) {
                (Some(base), true) => Some(format!("{base}/{imp_uid}")),
                _ => None,
            },
            cancel_history: Vec::new(),
            cancel_receipt_urls: Vec::new(),
            cash_receipt_issued: false,
            customer_uid,
            customer_uid_usage: usage,
            updated_at: now,
        };
        self.payments.push(payment.clone());
        payment
    }

    /// `GET /payments/{imp_uid}`.
    pub(crate) fn payment(&self, imp_uid: &str) -> Option<&Payment> {
        self.payments.index_of(imp_uid).map(|i| &self.payments[i])
    }

    /// Attempts with this merchant_uid (and status, if given), in `sorting` order.
    fn matching(&self, merchant_uid: &str, status: Option<Status>, sorting: Sorting) -> Vec<usize> {
        let mut idx: Vec<usize> = self
            .payments
            .with_merchant(merchant_uid)
            .iter()
            .copied()
            .filter(|&i| status.is_none_or(|s| self.payments[i].status == s))
            .collect();
        let key = |i: &usize| {
            let p = &self.payments[*i];
            let t = match sorting {
                Sorting::Started { .. } => p.started_at,
                Sorting::Paid { .. } => p.paid_at,
                Sorting::Updated { .. } => p.updated_at,
            };
            (t, *i)
        };
        idx.sort_by_key(key);
        let desc = match sorting {
            Sorting::Started { desc } | Sorting::Paid { desc } | Sorting::Updated { desc } => desc,
        };
        if desc {
            idx.reverse();
        }
        idx
    }

    /// `GET /payments/find/{merchant_uid}[/{status}]`: the first attempt in `sorting` order.
    pub(crate) fn find(&self, merchant_uid: &str, status: Option<Status>, sorting: Sorting) -> Option<&Payment> {
        self.matching(merchant_uid, status, sorting).first().map(|&i| &self.payments[i])
    }

    /// `GET /payments/findAll/{merchant_uid}[/{status}]` (`page` from 1).
    pub(crate) fn find_all(
        &self,
        merchant_uid: &str,
        status: Option<Status>,
        sorting: Sorting,
        page: usize,
        limit: usize,
    ) -> Paged {
        let idx = self.matching(merchant_uid, status, sorting);
        let total = idx.len();
        let list =
            idx.iter().skip((page - 1).saturating_mul(limit)).take(limit).map(|&i| self.payments[i].clone()).collect();
        Paged {
            total,
            previous: page.saturating_sub(1),
            next: if page.saturating_mul(limit) < total { page + 1 } else { 0 },
            list,
        }
    }

    /// `POST /payments/cancel`: full or partial refund of a paid attempt.
    pub(crate) fn cancel(&mut self, now: i64, req: CancelRequest) -> Result<Payment, Refusal> {
        let Some(index) = self.cancel_index(req.imp_uid.as_deref(), req.merchant_uid.as_deref()) else {
            return Err(Refusal::business(1, MSG_NOTHING_TO_CANCEL));
        };
        self.seq += 1;
        let seq = self.seq;
        let p = &mut self.payments[index];
        match p.status {
            Status::Paid => {}
            Status::Cancelled => {
                return Err(Refusal::business(1, "이미 전액취소된 주문입니다."));
            }
            Status::Failed | Status::Ready => {
                return Err(Refusal::business(
                    1,
                    format!("결제완료 상태가 아닌 결제건은 취소할 수 없습니다. (status: {})", p.status.as_str()),
                ));
            }
        }
        let cancellable = p.amount - p.cancel_amount;
        if let Some(checksum) = req.checksum
            && checksum != cancellable
        {
            return Err(Refusal::business(
                1,
                format!("checksum이 일치하지 않습니다. 취소가능잔액은 {cancellable}입니다."),
            ));
        }
        let amount = match req.amount {
            None | Some(0) => cancellable,
            Some(a) => a,
        };
        if amount > cancellable {
            return Err(Refusal::business(
                1,
                format!("취소가능잔액({cancellable})보다 큰 금액({amount})이 요청되었습니다."),
            ));
        }
        let reason = req.reason.unwrap_or_default();
        p.cancel_amount += amount;
        p.cancelled_at = now;
        p.updated_at = now;
        p.cancel_reason = Some(reason.clone());
        p.cancel_history.push(CancelRecord {
            pg_tid: p.pg_tid.clone(),
            amount,
            cancelled_at: now,
            reason,
            cancellation_id: format!("sbx_cancel_{seq}"),
        });
        if p.cancel_amount == p.amount {
            p.status = Status::Cancelled;
        }
        Ok(p.clone())
    }
}

/// Append-only storage of payment attempts whose lookups never stall the server, even with
/// millions of attempts: fixed-size chunks instead of one ever-growing `Vec` (no large copy on
/// growth), `imp_uid`s that encode their index (no map), and a `merchant_uid` index split into
/// shards (a resize rehashes one shard, not everything).
struct Payments {
    first_imp: u64,
    chunks: Vec<Vec<Payment>>,
    len: usize,
    by_merchant: Vec<HashMap<String, Vec<usize>>>,
    hasher: RandomState,
}

const CHUNK: usize = 4096;
const SHARDS: usize = 64;

impl Payments {
    fn new(first_imp: u64) -> Payments {
        Payments {
            first_imp,
            chunks: Vec::new(),
            len: 0,
            by_merchant: (0..SHARDS).map(|_| HashMap::new()).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The `imp_uid` the next pushed payment must carry: `imp_` + 12 digits.
    fn next_imp_uid(&self) -> String {
        format!("imp_{:012}", self.first_imp + self.len as u64)
    }

    fn index_of(&self, imp_uid: &str) -> Option<usize> {
        let n: u64 = imp_uid.strip_prefix("imp_").filter(|d| d.len() == 12)?.parse().ok()?;
        let i = usize::try_from(n.checked_sub(self.first_imp)?).ok()?;
        (i < self.len && self[i].imp_uid == imp_uid).then_some(i)
    }

    fn shard(&self, merchant_uid: &str) -> usize {
        (self.hasher.hash_one(merchant_uid) as usize) % SHARDS
    }

    /// Indexes of the attempts with this merchant_uid, oldest first.
    fn with_merchant(&self, merchant_uid: &str) -> &[usize] {
        self.by_merchant[self.shard(merchant_uid)].get(merchant_uid).map_or(&[], Vec::as_slice)
    }

    fn push(&mut self, payment: Payment) {
        debug_assert_eq!(payment.imp_uid, self.next_imp_uid());
        let index = self.len;
        let shard = self.shard(&payment.merchant_uid);
        self.by_merchant[shard].entry(payment.merchant_uid.clone()).or_default().push(index);
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(payment);
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &Payment> {
        self.chunks.iter().flatten()
    }
}

impl std::ops::Index<usize> for Payments {
    type Output = Payment;
    fn index(&self, i: usize) -> &Payment {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl std::ops::IndexMut<usize> for Payments {
    fn index_mut(&mut self, i: usize) -> &mut Payment {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

/// The card shown on a payment.
struct KeyCard {
    masked: String,
    code: &'static str,
    name: &'static str,
}

impl KeyCard {
    fn of(c: &Customer) -> KeyCard {
        KeyCard { masked: c.card_number.clone(), code: c.card_code, name: c.card_name }
    }
}

/// Decides one charge on a billing key (and counts it for `DeclineFirst` keys).
fn charge_key(c: &mut Customer) -> Option<&'static str> {
    match c.class {
        CardClass::DeclineFirst(_) => {
            if c.declines_left > 0 {
                c.declines_left -= 1;
                Some(cards::REASON_INSUFFICIENT_FUNDS)
            } else {
                None
            }
        }
        class => class.decline_reason(),
    }
}

/// What is wrong with presented card data.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CardProblem {
    Number(CardError),
    Expiry(&'static str),
    Birth,
    Pwd,
}

impl std::fmt::Display for CardProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CardProblem::Number(CardError::Format) => {
                f.write_str("card_number must be 13 to 19 digits (spaces and dashes allowed)")
            }
            CardProblem::Number(CardError::Luhn) => f.write_str("card_number fails the Luhn check"),
            CardProblem::Expiry(why) => write!(f, "expiry {why}"),
            CardProblem::Birth => f.write_str("birth must be YYMMDD (6 digits) or a 10-digit business number"),
            CardProblem::Pwd => f.write_str("pwd_2digit must be 2 digits"),
        }
    }
}

/// Validates card data the way a PG would before issuing a key or charging.
pub(crate) fn check_card(now: i64, card: &CardInput) -> Result<(String, CardFacts), CardProblem> {
    let (digits, facts) = cards::inspect(&card.card_number).map_err(CardProblem::Number)?;
    check_expiry(now, &card.expiry).map_err(CardProblem::Expiry)?;
    match card.birth.as_deref() {
        Some(b) if valid_birth(b) => {}
        _ => return Err(CardProblem::Birth),
    }
    if let Some(pwd) = card.pwd_2digit.as_deref()
        && (pwd.len() != 2 || !pwd.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(CardProblem::Pwd);
    }
    Ok((digits, facts))
}

fn check_expiry(now: i64, expiry: &str) -> Result<(), &'static str> {
    let b = expiry.as_bytes();
    if b.len() != 7 || b[4] != b'-' || !expiry[..4].bytes().chain(expiry[5..].bytes()).all(|c| c.is_ascii_digit()) {
        return Err("must be YYYY-MM");
    }
    let year: i32 = expiry[..4].parse().map_err(|_| "must be YYYY-MM")?;
    let month: u32 = expiry[5..].parse().map_err(|_| "must be YYYY-MM")?;
    if !(1..=12).contains(&month) {
        return Err("has no such month");
    }
    let today = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
    use chrono::Datelike;
    if (year, month) < (today.year(), today.month()) {
        return Err("is in the past (the card has expired)");
    }
    Ok(())
}

fn valid_birth(b: &str) -> bool {
    if !b.bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    match b.len() {
        10 => true,
        6 => {
            let month: u32 = b[2..4].parse().unwrap_or(0);
            let day: u32 = b[4..6].parse().unwrap_or(0);
            (1..=12).contains(&month) && (1..=31).contains(&day)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn card(number: &str) -> CardInput {
        CardInput {
            card_number: number.to_string(),
            expiry: "2030-12".to_string(),
            birth: Some("900101".to_string()),
            pwd_2digit: Some("12".to_string()),
        }
    }

    fn charge(merchant_uid: &str) -> ChargeRequest {
        ChargeRequest {
            merchant_uid: merchant_uid.to_string(),
            amount: 9900,
            currency: "KRW".to_string(),
            name: Some("Monthly plan".to_string()),
            ..ChargeRequest::default()
        }
    }

    fn ledger_with(customer_uid: &str, number: &str) -> Ledger {
        let mut l = Ledger::new(100_000_000_000);
        l.issue_key(NOW, customer_uid, &card(number), CustomerInfo::default()).expect("issue");
        l
    }

    #[test]
    fn approved_charge_is_paid_and_indexed() {
        let mut l = ledger_with("c", cards::APPROVE);
        let p = l.again(NOW, "c", charge("m1")).expect("charge");
        assert_eq!(p.status, Status::Paid);
        assert_eq!((p.paid_at, p.failed_at), (NOW, 0));
        assert_eq!(p.imp_uid, "imp_100000000000");
        assert_eq!(p.card_number, "424242******4242");
        assert_eq!(l.payment(&p.imp_uid), Some(&p));
        assert_eq!(l.find("m1", None, Sorting::default()), Some(&p));
    }

    #[test]
    fn paid_merchant_uid_is_refused_and_nothing_is_recorded() {
        let mut l = ledger_with("c", cards::APPROVE);
        l.again(NOW, "c", charge("m1")).expect("first");
        let err = l.again(NOW, "c", charge("m1")).unwrap_err();
        assert_eq!(err.code, 1);
        assert_eq!(l.entries().len(), 1);
    }

    #[test]
    fn failed_merchant_uid_can_be_retried_with_a_new_imp_uid() {
        let mut l = ledger_with("c", &cards::decline_first(1));
        let first = l.again(NOW, "c", charge("m1")).expect("first");
        assert_eq!(first.status, Status::Failed);
        assert_eq!(first.fail_reason.as_deref(), Some(cards::REASON_INSUFFICIENT_FUNDS));
        let second = l.again(NOW, "c", charge("m1")).expect("second");
        assert_eq!(second.status, Status::Paid);
        assert_ne!(first.imp_uid, second.imp_uid);
        assert_eq!(l.find("m1", None, Sorting::default()).map(|p| &p.imp_uid), Some(&second.imp_uid));
        assert_eq!(l.find("m1", None, Sorting::Started { desc: false }).map(|p| &p.imp_uid), Some(&first.imp_uid));
        assert_eq!(l.find("m1", Some(Status::Failed), Sorting::default()).map(|p| &p.imp_uid), Some(&first.imp_uid));
        let all = l.find_all("m1", None, Sorting::default(), 1, 1);
        assert_eq!((all.total, all.previous, all.next, all.list.len()), (2, 0, 2, 1));
    }

    #[test]
    fn reissuing_a_key_replaces_the_card_and_restarts_the_count() {
        let mut l = ledger_with("c", &cards::decline_first(1));
        let first = l.customer("c").expect("key").clone();
        assert_eq!(first.updated, 0);
        l.issue_key(NOW + 5, "c", &card(cards::DECLINE_LOST), CustomerInfo::default()).expect("reissue");
        let second = l.customer("c").expect("key");
        assert_eq!((second.inserted, second.updated), (NOW, NOW + 5));
        assert_eq!(second.class, CardClass::Lost);
        let p = l.again(NOW, "c", charge("m")).expect("charge");
        assert_eq!(p.fail_reason.as_deref(), Some(cards::REASON_LOST));
    }

    #[test]
    fn card_checks() {
        assert_eq!(check_card(NOW, &card(cards::APPROVE)).map(|r| r.1.class), Ok(CardClass::Approve));
        let mut c = card(cards::APPROVE);
        c.expiry = "2025-12".into();
        assert!(matches!(check_card(NOW, &c), Err(CardProblem::Expiry(_))));
        c.expiry = "2026-01".into();
        assert!(check_card(NOW, &c).is_ok(), "the current month is still valid");
        c.expiry = "2026/01".into();
        assert!(matches!(check_card(NOW, &c), Err(CardProblem::Expiry(_))));
        let mut c = card(cards::APPROVE);
        c.birth = Some("901301".into());
        assert_eq!(check_card(NOW, &c).map(|_| ()), Err(CardProblem::Birth));
        c.birth = Some("1234567890".into());
        assert!(check_card(NOW, &c).is_ok());
        c.birth = None;
        assert_eq!(check_card(NOW, &c).map(|_| ()), Err(CardProblem::Birth));
        let mut c = card(cards::APPROVE);
        c.pwd_2digit = Some("123".into());
        assert_eq!(check_card(NOW, &c).map(|_| ()), Err(CardProblem::Pwd));
        c.pwd_2digit = None;
        assert!(check_card(NOW, &c).is_ok());
    }

    #[test]
    fn partial_then_full_cancel() {
        let mut l = ledger_with("c", cards::APPROVE);
        let p = l.again(NOW, "c", charge("m")).expect("charge");
        let part = l
            .cancel(
                NOW + 1,
                CancelRequest { imp_uid: Some(p.imp_uid.clone()), amount: Some(900), ..Default::default() },
            )
            .expect("partial");
        assert_eq!((part.status, part.cancel_amount), (Status::Paid, 900));
        let too_much = l.cancel(
            NOW + 2,
            CancelRequest { merchant_uid: Some("m".into()), amount: Some(9001), ..Default::default() },
        );
        assert_eq!(too_much.map(|_| ()).unwrap_err().code, 1);
        let bad_checksum = l.cancel(
            NOW + 2,
            CancelRequest { merchant_uid: Some("m".into()), checksum: Some(9900), ..Default::default() },
        );
        assert_eq!(bad_checksum.map(|_| ()).unwrap_err().code, 1);
        let rest = l
            .cancel(
                NOW + 2,
                CancelRequest { merchant_uid: Some("m".into()), checksum: Some(9000), ..Default::default() },
            )
            .expect("rest");
        assert_eq!((rest.status, rest.cancel_amount, rest.cancel_history.len()), (Status::Cancelled, 9900, 2));
        let again = l.cancel(NOW + 3, CancelRequest { imp_uid: Some(p.imp_uid), ..Default::default() });
        assert_eq!(again.map(|_| ()).unwrap_err().code, 1);
        // A cancelled merchant_uid was paid once: it cannot be paid again.
        assert_eq!(l.again(NOW, "c", charge("m")).map(|_| ()).unwrap_err().code, 1);
    }

    #[test]
    fn keyless_decline_first_counts_per_card_class() {
        let mut l = Ledger::new(1);
        let c = card(&cards::decline_first(2));
        let statuses: Vec<Status> =
            (0..3).map(|i| l.onetime(NOW, None, &c, charge(&format!("m{i}"))).expect("onetime").status).collect();
        assert_eq!(statuses, [Status::Failed, Status::Failed, Status::Paid]);
    }

    #[test]
    fn lookups_work_across_storage_chunks() {
        let mut l = ledger_with("c", cards::APPROVE);
        let n = CHUNK * 2 + 10;
        for i in 0..n {
            l.again(NOW, "c", charge(&format!("m{i}"))).expect("charge");
        }
        assert_eq!(l.entries().len(), n);
        for i in [0, CHUNK - 1, CHUNK, n - 1] {
            let imp_uid = format!("imp_{:012}", 100_000_000_000u64 + i as u64);
            let p = l.payment(&imp_uid).expect("by imp_uid");
            assert_eq!(p.merchant_uid, format!("m{i}"));
            assert_eq!(l.find(&p.merchant_uid, None, Sorting::default()).map(|f| &f.imp_uid), Some(&imp_uid));
        }
        for bogus in ["imp_099999999999", "imp_100000008202", "imp_1", "imps_100000000000", "imp_10000000000x"] {
            assert!(l.payment(bogus).is_none(), "{bogus}");
        }
    }
}
