//! The real clocks (never the billing clock): what the quiet period of a request in progress is measured on. The
//! system's wall clock, and on Linux `CLOCK_BOOTTIME` with the kernel's boot id, a clock that wall-clock steps do
//! not move and that every process of one boot shares.

use crate::billing::quiet::RealInstant;
use std::sync::OnceLock;

/// Where the engine and the commands read real time. The binary uses [`SystemClock`]; a model of the protocol
/// (the property tests) may pass its own.
pub trait RealClock: Send + Sync + 'static {
    fn now(&self) -> RealInstant;
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl RealClock for SystemClock {
    fn now(&self) -> RealInstant {
        let wall_ms = chrono::Utc::now().timestamp_millis();
        // Without the boot id (hidden, e.g. by systemd's ProcSubset=pid), the boot clock still bounds the wait
        // (`billing::quiet::boot_elapsed_at_least`): never dropped.
        RealInstant { wall_ms, boot: boot_ms().map(|ms| (boot_id().unwrap_or_default().to_owned(), ms)) }
    }
}

/// Milliseconds on a clock that never runs backward and that wall-clock steps do not move: `CLOCK_BOOTTIME` (it
/// counts a suspend too), or elsewhere the process's monotonic clock. For this process's own deadlines.
pub fn steady_ms() -> i64 {
    boot_ms().unwrap_or_else(|| {
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_millis().min(i64::MAX as u128) as i64
    })
}

/// The wall clock as it read when this process first asked, carried forward on the steady clock: a clock of this
/// machine that a step of the wall clock does not move while the process runs (a lease measured on the wall clock
/// itself would lapse at once when it is stepped forward). For the leases of a book only one process schedules on at
/// a time (SQLite).
pub fn process_wall_ms() -> i64 {
    static START: OnceLock<(i64, i64)> = OnceLock::new();
    let (wall, steady) = *START.get_or_init(|| (chrono::Utc::now().timestamp_millis(), steady_ms()));
    wall.saturating_add(steady_ms().saturating_sub(steady))
}

/// The database's clock, the one clock of the daemons sharing a book (issue 27): read at each heartbeat and carried
/// forward between them on this machine's steady clock ([`steady_ms`]), so that neither skew between servers nor a
/// step of this machine's wall clock moves it. Its readings are off by at most the round trip of the last reading.
/// The boot clock of each reading is this machine's, as [`SystemClock`]'s (it only ever lengthens a wait, see
/// [`crate::billing::quiet::remaining`]).
#[derive(Debug)]
pub struct BookClock {
    /// (database ms, steady ms) at the last reading.
    anchor: std::sync::Mutex<(i64, i64)>,
}

impl BookClock {
    /// A clock that read `db_ms` on the database's clock when this machine's steady clock said `steady_ms`.
    pub fn new(db_ms: i64, steady_ms: i64) -> BookClock {
        BookClock { anchor: std::sync::Mutex::new((db_ms, steady_ms)) }
    }

    /// A new reading of the database's clock (taken right before `steady_ms` was read).
    pub fn set(&self, db_ms: i64, steady_ms: i64) {
        *self.anchor.lock().unwrap_or_else(|p| p.into_inner()) = (db_ms, steady_ms);
    }
}

impl RealClock for BookClock {
    fn now(&self) -> RealInstant {
        let (db_ms, at) = *self.anchor.lock().unwrap_or_else(|p| p.into_inner());
        let wall_ms = db_ms.saturating_add(steady_ms().saturating_sub(at).max(0));
        RealInstant { wall_ms, boot: SystemClock.now().boot }
    }
}

/// The process's book clock: set once a PostgreSQL book is opened ([`anchor`]), so that every real instant this
/// process records or compares (a charge's go, a refund's, a one-time charge's, their quiet periods) is on the
/// database's clock, as every other daemon's are. Unset: the system's clocks.
static BOOK: OnceLock<BookClock> = OnceLock::new();

/// Puts this process on the database's clock: `db_ms` read on it when the steady clock said `steady`.
pub fn anchor(db_ms: i64, steady: i64) {
    if BOOK.set(BookClock::new(db_ms, steady)).is_err()
        && let Some(book) = BOOK.get()
    {
        book.set(db_ms, steady);
    }
}

/// Puts this process on the database's clock with a reading of its own: `read` asks the database for its clock,
/// timed on the steady clock, and the reading is taken as made halfway through the round trip (so it is off by at
/// most half of it; an outside review found a reading taken before a wait for a lock, seconds late,
/// and a stamp that late shortened another server's quiet period). A round trip longer than a second is not taken
/// (the last reading stands), unless there is none yet.
pub fn anchor_with(read: impl FnOnce() -> anyhow::Result<i64>) -> anyhow::Result<()> {
    let before = steady_ms();
    let db_ms = read()?;
    let after = steady_ms();
    if after.saturating_sub(before) <= 1000 || BOOK.get().is_none() {
        anchor(db_ms, before + after.saturating_sub(before) / 2);
    }
    Ok(())
}

/// The real clock of this process: the book's ([`anchor`]) if it has one, else the system's.
pub fn clock() -> &'static dyn RealClock {
    match BOOK.get() {
        Some(book) => book,
        None => &SystemClock,
    }
}

/// [`clock`] as a value (for what holds a `RealClock`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessClock;

impl RealClock for ProcessClock {
    fn now(&self) -> RealInstant {
        clock().now()
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once; `None` where the system has none.
fn boot_id() -> Option<&'static str> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = id.trim();
        (!id.is_empty() && id.len() <= 64).then(|| id.to_owned())
    })
    .as_deref()
}

/// Milliseconds on `CLOCK_BOOTTIME` (monotonic, counts suspend, not moved by wall-clock steps).
#[cfg(target_os = "linux")]
fn boot_ms() -> Option<i64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec to the pointer it is given, which points at a live local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (rc == 0).then(|| ts.tv_sec.saturating_mul(1000).saturating_add(ts.tv_nsec / 1_000_000))
}

#[cfg(not(target_os = "linux"))]
fn boot_ms() -> Option<i64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_has_a_boot_clock_on_linux_that_never_runs_backward() {
        let a = SystemClock.now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = SystemClock.now();
        if cfg!(target_os = "linux") {
            let ((id_a, ms_a), (id_b, ms_b)) =
                (a.boot.clone().expect("CLOCK_BOOTTIME"), b.boot.clone().expect("CLOCK_BOOTTIME"));
            assert_eq!(id_a, id_b);
            assert!(ms_b >= ms_a + 5, "{ms_a} then {ms_b}");
        }
        assert!(a.wall_ms > 1_600_000_000_000, "{a:?}");
    }
}
