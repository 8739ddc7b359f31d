//! The daemons sharing a book, as the store records and lists them.

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
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| crate::text::cell(h.trim()).chars().take(64).collect::<String>())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into());
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
