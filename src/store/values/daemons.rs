//! The daemons sharing a book, as the store records and lists them.

/// The jobs that run on one daemon at a time ([`crate::store::Daemons::try_jobs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    /// A pass's config sync and sweeps (cancel dates, pauses that end, the catch-up window, trial endings, plan
    /// changes whose command died).
    Billing,
    /// Webhook deliveries and the outbox's housekeeping (pruning, giving up old unsent events): one daemon delivers,
    /// so two never send the same event at once.
    Deliveries,
}

/// A process joining a book as one of its daemons ([`crate::store::Daemons::join`]): what `billd status` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonInfo {
    pub host: String,
    pub pid: u32,
    pub version: String,
}

impl DaemonInfo {
    /// This process: its host name (as the kernel has it), pid and billd's version.
    pub fn this_process() -> DaemonInfo {
        // From the kernel (uname), not /proc/sys, which systemd's ProcSubset=pid hides.
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most `buf.len()` bytes into the live local buffer it is given.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let raw = if rc == 0 { &buf[..buf.iter().position(|&b| b == 0).unwrap_or(buf.len())] } else { &[][..] };
        let host = crate::text::cell(String::from_utf8_lossy(raw).trim()).chars().take(64).collect::<String>();
        let host = if host.is_empty() { "unknown".into() } else { host };
        DaemonInfo { host, pid: std::process::id(), version: env!("CARGO_PKG_VERSION").into() }
    }
}

/// A daemon of the book as [`crate::store::Daemons::daemons`] lists it. Instants are milliseconds on the database's
/// clock (the one clock of every daemon), with that clock's reading when the list was made.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonRow {
    pub id: i64,
    pub info: DaemonInfo,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    pub lease_until_ms: i64,
    /// When it left or its lease was ended, and why (`None`: it has not).
    pub left: Option<(i64, String)>,
    /// It held the one-at-a-time jobs at its last heartbeat.
    pub jobs: bool,
    /// The unresolved attempts it owns (charges in flight or in doubt that no other daemon touches while it lives).
    pub holds: u64,
    /// The database's clock when the row was read.
    pub db_now_ms: i64,
}

impl DaemonRow {
    /// Running: it has not left and its lease has not lapsed.
    pub fn running(&self) -> bool {
        self.left.is_none() && self.lease_until_ms > self.db_now_ms
    }
}
