//! `billd import FILE.csv`: bulk-loads subscriptions that are kept in the database only (source `manual`, so a
//! config sync never cancels them), for books too large to write in `schedules.toml`.
//!
//! The file has a header row naming the columns `id,customer_uid,plan,start` (any order). Plans must exist in the
//! config. The import runs in two passes over the file:
//!
//! 1. **Check**: every row is validated (id, customer_uid, plan, start; duplicate ids in the file; ids already in
//!    the database with other values). Every problem is listed with its line and column and nothing is written.
//! 2. **Insert**: rows go in with prepared statements, 10,000 per transaction, so a running daemon can keep
//!    committing between them.
//!
//! Re-importing is safe: a row whose id is already in the database with the same customer_uid, plan and start is
//! skipped (it is never changed, even if it was canceled since); the same id with other values is an error.

use crate::app::open_store;
use crate::billing::model::Source;
use crate::billing::terms::{self, Own};
use crate::config::{Config, parse_date};
use crate::store::{Book, ImportRow, ImportedAs};
use anyhow::{Context, Result, anyhow, bail};
use chrono::{NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// Rows per write transaction.
const CHUNK: usize = 10_000;
/// Problems listed before the rest are only counted.
const MAX_LISTED: usize = 50;
/// The columns, in the order the documentation gives them.
const COLUMNS: [&str; 4] = ["id", "customer_uid", "plan", "start"];

/// One valid row.
struct Row {
    line: u64,
    id: String,
    customer_uid: String,
    plan: String,
    start: NaiveDate,
}

/// What an import did.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub inserted: usize,
    pub skipped: usize,
}

/// `billd import FILE`: the command.
pub fn run(config: &Path, file: &Path, catch_up: bool, (now, simulate): crate::commands::ops::At) -> Result<ExitCode> {
    let cfg = crate::app::load_config(config)?;
    crate::commands::simulate::check_as_of(&cfg, now, Utc::now(), simulate)?;
    let store = open_store(&cfg)?;
    crate::commands::ops::refuse_another_clock(&cfg, &store)?;
    let started = Instant::now();
    match import(&cfg, &store, file, (catch_up, now), std::io::stderr().is_terminal()) {
        Ok(s) => {
            crate::say!(
                "imported {} subscription{} from {} ({} already in the database, skipped) in {:.1} s",
                s.inserted,
                plural(s.inserted),
                file.display(),
                s.skipped,
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ImportError::Invalid(problems, total)) => {
            for p in &problems {
                eprintln!("{}:{p}", file.display());
            }
            if total > problems.len() {
                eprintln!("{}: … and {} more problems", file.display(), total - problems.len());
            }
            eprintln!("{}: {total} problem{} found; nothing was imported", file.display(), plural(total));
            Ok(ExitCode::FAILURE)
        }
        Err(ImportError::Other(e)) => Err(e),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Why an import did not complete.
#[derive(Debug)]
pub enum ImportError {
    /// The file has problems (the first ones listed as `LINE: …`, and how many in all); nothing was written.
    Invalid(Vec<String>, usize),
    /// The file or the database could not be used.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for ImportError {
    fn from(e: anyhow::Error) -> Self {
        ImportError::Other(e)
    }
}

/// Checks the whole file, then inserts its rows as at `now` (a start more than one interval before its date is
/// refused unless `catch_up`). `progress` draws bars on stderr.
pub fn import(
    cfg: &Config,
    store: &impl Book,
    file: &Path,
    (catch_up, now): (bool, chrono::DateTime<Utc>),
    progress: bool,
) -> Result<Summary, ImportError> {
    let size = std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?.len();
    let bar = |len: u64, template: &str| {
        if !progress {
            return ProgressBar::hidden();
        }
        let b = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template(template) {
            b.set_style(style.progress_chars("=> "));
        }
        b
    };

    // Pass 1: check every row; nothing is written unless the whole file is valid.
    let checking = bar(size, "checking  [{bar:40}] {bytes}/{total_bytes} {elapsed}");
    let today = cfg.billing.clock.local_date(now);
    let mut problems = Problems::default();
    // Ids seen so far, by a 64-bit hash (8 bytes each instead of the id; a false duplicate needs a collision, about
    // one chance in 10^7 for a million rows), with the line each was on.
    let mut seen: HashMap<u64, u64, BuildHasherDefault<DefaultHasher>> = HashMap::default();
    let mut rows = 0u64;
    {
        for_each_row(cfg, file, &mut problems, |row, problems, byte| {
            rows += 1;
            if rows.is_multiple_of(4096) {
                checking.set_position(byte);
            }
            // Compared regardless of case: ids that differ only by case would give merchant_uids that do too, and
            // the gateway may not tell them apart.
            let key = BuildHasherDefault::<DefaultHasher>::default().hash_one(row.id.to_ascii_lowercase());
            if let Some(first) = seen.insert(key, row.line) {
                problems.push(
                    row.line,
                    "id",
                    format!("duplicate id {:?} (also on line {first}), ids compared regardless of case", row.id),
                );
                return Ok(());
            }
            let (existing, same_but_case) = store.import_lookup(&row.id)?;
            if let Some(other) = same_but_case {
                problems.push(
                    row.line,
                    "id",
                    format!(
                        "{:?} differs from subscription {other:?} in the database only by case (their merchant_uids \
                         would too, and the gateway may not tell them apart)",
                        row.id
                    ),
                );
            }
            let Some(plan) = cfg.plan(&row.plan) else {
                return Ok(()); // reported by for_each_row
            };
            // A row already imported is skipped, whatever the date: the backdated-start rule is for what it adds.
            // Judged from its first charge (its start, or the end of its plan's trial), as a config entry's is.
            let first = terms::first_charge(plan.trial_days, row.start, None);
            if existing.is_none()
                && let Some(why) = crate::billing::sync::backdated(plan.interval, first, today).filter(|_| !catch_up)
            {
                problems.push(
                    row.line,
                    "start",
                    format!("{why}; set start to the next due date, or pass --catch-up to charge them all"),
                );
            }
            if let Some(have) = existing
                && let Some(why) = differs(&have, &row)
            {
                problems.push(row.line, "id", format!("subscription {:?} is already in the database {why}", row.id));
            }
            Ok(())
        })?;
    }
    checking.finish_and_clear();
    drop(seen);
    if problems.total > 0 {
        return Err(ImportError::Invalid(problems.listed, problems.total));
    }

    // Pass 2: insert, CHUNK rows per transaction.
    let inserting = bar(rows, "importing [{bar:40}] {pos}/{len} rows {elapsed} (eta {eta})");
    let mut summary = Summary::default();
    let mut chunk: Vec<Row> = Vec::with_capacity(CHUNK);
    let flush = |chunk: &mut Vec<Row>, summary: &mut Summary| -> Result<()> {
        let (inserted, skipped) = insert_chunk(store, cfg, chunk, now)?;
        summary.inserted += inserted;
        summary.skipped += skipped;
        inserting.inc(chunk.len() as u64);
        chunk.clear();
        Ok(())
    };
    let mut late = Problems::default();
    for_each_row(cfg, file, &mut late, |row, _, _| {
        chunk.push(row);
        if chunk.len() == CHUNK {
            flush(&mut chunk, &mut summary)?;
        }
        Ok(())
    })?;
    if late.total > 0 {
        // The file changed between the passes.
        return Err(ImportError::Other(anyhow!(
            "{} changed while it was imported (line {}); rerun the import (rows already imported are skipped)",
            file.display(),
            late.listed.first().cloned().unwrap_or_default()
        )));
    }
    if !chunk.is_empty() {
        flush(&mut chunk, &mut summary)?;
    }
    inserting.finish_and_clear();
    Ok(summary)
}

/// Why an existing row blocks the import of `row` (`None` when it is the same subscription: skipped).
fn differs(have: &ImportedAs, row: &Row) -> Option<String> {
    let ImportedAs { customer_uid, plan_id: plan, start_date: start, source } = have;
    if *source != Source::Manual {
        return Some(format!("from {} (schedules.toml); use another id", source.as_str()));
    }
    let mut what = Vec::new();
    if *customer_uid != row.customer_uid {
        what.push(format!("customer_uid {customer_uid:?}"));
    }
    if *plan != row.plan {
        what.push(format!("plan {plan:?}"));
    }
    if *start != row.start.to_string() {
        what.push(format!("start {start}"));
    }
    (!what.is_empty()).then(|| format!("with {} (an import never changes a subscription)", what.join(", ")))
}

/// Inserts one chunk in one write transaction (an existing id with other values is an error: nothing of the chunk is
/// written); returns how many rows were inserted and how many skipped.
fn insert_chunk(store: &impl Book, cfg: &Config, rows: &[Row], now: chrono::DateTime<Utc>) -> Result<(usize, usize)> {
    let mut new = Vec::with_capacity(rows.len());
    let clock = &cfg.billing.clock;
    for row in rows {
        let plan = cfg.plan(&row.plan).ok_or_else(|| anyhow!("line {}: unknown plan {:?}", row.line, row.plan))?;
        // Its plan's trial and term, as a config entry or `subscriptions add` gets them.
        let s =
            terms::subscription((&row.id, &row.customer_uid), plan, row.start, &Own::default(), Source::Manual, clock);
        new.push(ImportRow {
            next_due_at: s.billed_due(clock, 0),
            id: s.id,
            customer_uid: s.customer_uid,
            plan_id: s.plan_id,
            plan_name: s.plan_name,
            amount: s.amount,
            currency: s.currency,
            interval: s.interval,
            start_date: s.start_date,
            anchor_date: s.anchor_date,
            status: s.status,
            last_period: s.last_period,
        });
    }
    // Checked in pass 1; looked at again in case another command wrote the same id since.
    store.import_chunk(&new, now, |i, have| match differs(have, &rows[i]) {
        Some(why) => bail!("line {}: subscription {:?} is already in the database {why}", rows[i].line, rows[i].id),
        None => Ok(()),
    })
}

/// Problems found so far: the first [`MAX_LISTED`] as text, and a count.
#[derive(Default)]
struct Problems {
    listed: Vec<String>,
    total: usize,
}

impl Problems {
    fn push(&mut self, line: u64, column: &str, message: String) {
        self.total += 1;
        if self.listed.len() < MAX_LISTED {
            let n = COLUMNS.iter().position(|c| *c == column).map(|i| format!(" {}", i + 1)).unwrap_or_default();
            self.listed.push(format!("{line}: column{n} ({column}): {message}"));
        }
    }

    fn push_line(&mut self, line: u64, message: String) {
        self.total += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(format!("{line}: {message}"));
        }
    }
}

/// Reads the file, calling `f` with each row that is well-formed on its own (rows with problems are reported and
/// skipped) and the byte offset reached.
fn for_each_row(
    cfg: &Config,
    file: &Path,
    problems: &mut Problems,
    mut f: impl FnMut(Row, &mut Problems, u64) -> Result<()>,
) -> Result<()> {
    let reader = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        // Headers are trimmed; fields are trimmed below, except customer_uid, which the gateway receives byte for
        // byte (white space at either end of it is refused, like a CR, as everywhere ids enter).
        .trim(csv::Trim::Headers)
        .flexible(true)
        .from_reader(std::io::BufReader::with_capacity(1 << 16, reader));
    let headers = match csv.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            problems.push_line(1, format!("cannot read the header row: {}", csv_error(&e)));
            return Ok(());
        }
    };
    let mut index = [usize::MAX; 4];
    if !headers.iter().any(|h| COLUMNS.iter().any(|c| c.eq_ignore_ascii_case(h))) {
        problems.push_line(1, format!("the first line must be the header row {}", COLUMNS.join(",")));
        return Ok(());
    }
    for (i, h) in headers.iter().enumerate() {
        match COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(h)) {
            Some(c) if index[c] == usize::MAX => index[c] = i,
            Some(_) => problems.push_line(1, format!("column {} ({h}): duplicate column", i + 1)),
            None => problems.push_line(
                1,
                format!(
                    "column {} ({}): unknown column; the header must be {}",
                    i + 1,
                    crate::text::quote(h),
                    COLUMNS.join(",")
                ),
            ),
        }
    }
    let missing: Vec<&str> = COLUMNS.iter().zip(index).filter(|(_, i)| *i == usize::MAX).map(|(c, _)| *c).collect();
    if !missing.is_empty() {
        problems.push_line(
            1,
            format!(
                "the header row lacks {} (it must be {}); is the header row missing?",
                missing.join(", "),
                COLUMNS.join(",")
            ),
        );
    }
    if problems.total > 0 {
        return Ok(());
    }
    let width = headers.len();
    let mut record = csv::StringRecord::new();
    loop {
        match csv.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                problems.push_line(line, csv_error(&e));
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(anyhow!("cannot read {}: {}", file.display(), csv_error(&e)));
                }
                continue;
            }
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.len() == 1 && record.get(0) == Some("") {
            continue; // a blank line
        }
        if record.len() != width {
            problems.push_line(line, format!("{} fields, but the header has {width}", record.len()));
            continue;
        }
        let raw = |c: usize| record.get(index[c]).unwrap_or_default();
        let get = |c: usize| raw(c).trim();
        let before = problems.total;
        let id = get(0);
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            let id = crate::text::quote(id);
            problems.push(line, "id", format!("{id} must be 1-64 characters of letters, digits, '-', '_' or '.'"));
        }
        let customer_uid = raw(1);
        if let Some(why) = crate::ids::refusal(customer_uid, crate::ids::CUSTOMER_UID_MAX) {
            problems.push(line, "customer_uid", why);
        }
        let plan = get(2);
        if cfg.plan(plan).is_none() {
            problems.push(
                line,
                "plan",
                format!(
                    "unknown plan {} (no [[plans]] entry in {} has that id)",
                    crate::text::quote(plan),
                    cfg.file.display()
                ),
            );
        }
        let start = parse_date(get(3)).unwrap_or_else(|e| {
            problems.push(line, "start", e);
            NaiveDate::MIN
        });
        if problems.total == before {
            let row =
                Row { line, id: id.to_owned(), customer_uid: customer_uid.to_owned(), plan: plan.to_owned(), start };
            f(row, problems, record.position().map(|p| p.byte()).unwrap_or(0))?;
        }
    }
}

fn csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("field {} is not valid UTF-8", err.field() + 1),
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("{len} fields, but the header has {expected_len}")
        }
        _ => e.to_string(),
    }
}
