//! SQLite: what a notification's merchant_uid names in the book (`Notices::notice_target`), and a settlement recorded only if its attempt is unchanged (`record.rs` does the recording).

use super::attempts::{ATTEMPT_SELECT, attempt_from_row};
use super::db::params;
use super::one_time::{UNRESOLVED_ONE_TIME_SELECT, unresolved_one_time_row};
use super::{SqlStore, secs};
use crate::store::{ChargeStatus, NoticeTarget, Notices, Recorded, StatusChange};
use anyhow::Result;
use chrono::{DateTime, Utc};

impl Notices for SqlStore {
    fn notice_target(&self, merchant_uid: &str) -> Result<NoticeTarget> {
        // One read transaction: the reads below see one snapshot of the book.
        let tx = self.snapshot()?;
        let unresolved = tx.query_opt(
            &format!("{ATTEMPT_SELECT} WHERE p.merchant_uid = ?1 AND a.status IN ('pending', 'unknown') LIMIT 1"),
            params![merchant_uid],
            attempt_from_row,
        )?;
        if let Some(a) = unresolved {
            return Ok(NoticeTarget::Attempt(a));
        }
        let period: Option<(Option<String>, Option<ChargeStatus>)> = tx.query_opt(
            "SELECT a.imp_uid, a.status FROM periods p
                   LEFT JOIN attempts a ON a.subscription_id = p.subscription_id AND a.period = p.period
                 WHERE p.merchant_uid = ?1 ORDER BY a.status = 'paid' DESC, a.id DESC LIMIT 1",
            params![merchant_uid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if let Some(found) = period {
            return Ok(match found {
                (Some(imp_uid), Some(ChargeStatus::Paid)) => NoticeTarget::Paid { imp_uid },
                (_, Some(status)) => NoticeTarget::Settled(status),
                (_, None) => NoticeTarget::Uncharged,
            });
        }
        let one_time = tx.query_opt(
            &format!("{UNRESOLVED_ONE_TIME_SELECT} WHERE merchant_uid = ?1"),
            params![merchant_uid],
            |r| Ok((unresolved_one_time_row(r)?, r.get::<ChargeStatus>(13)?, r.get::<Option<String>>(11)?)),
        )?;
        Ok(match one_time {
            Some((c, status, _)) if status.unresolved() => NoticeTarget::OneTime(c),
            Some((_, ChargeStatus::Paid, Some(imp_uid))) => NoticeTarget::Paid { imp_uid },
            Some((_, status, _)) => NoticeTarget::Settled(status),
            None => NoticeTarget::Unknown,
        })
    }

    fn record_unchanged(&self, item: &Recorded, now: DateTime<Utc>) -> Result<Option<Vec<StatusChange>>> {
        super::record::record_unchanged(self, item, secs(now))
    }
}
