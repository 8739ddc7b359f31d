//! A throwaway PostgreSQL cluster for tests, started by the test process itself; [`database`] gives a fresh database.
//!
//! A test file takes it with `#[path = "common/pg.rs"] mod pg;` beside `mod common;` (like `common/receiver.rs`: the
//! test binaries without PostgreSQL do not build it).
//!
//! - Binaries: `pg_config --bindir`, else the highest `/usr/lib/postgresql/*/bin`, else `initdb` on PATH (each must
//!   hold `initdb`, `pg_ctl`, `postgres` and `psql`). Missing: [`database`] prints `SKIPPED: …` and returns `None`;
//!   under `CI=true` it fails instead.
//! - Nothing is read from the developer's machine: every `PG*` variable is removed from the commands' environment,
//!   psql runs with `-X`, the cluster has its own settings (C locale, UTC, trust auth for the superuser `postgres`,
//!   listening on 127.0.0.1 on a free port and on a socket in its own directory only).
//! - As root, the cluster runs as `nobody` (through `setpriv`): initdb refuses root. Otherwise as the current user.
//! - One cluster per test process, started by the first [`database`] call in a fresh private directory (on /dev/shm
//!   when it is a tmpfs with room, else in the temp dir), with durability off (fsync, synchronous_commit,
//!   full_page_writes). `initdb` runs once per PostgreSQL version and settings: its data directory is kept under
//!   `CARGO_TARGET_TMPDIR/pg-template/` (built under a file lock, moved into place only when complete) and copied
//!   for each process, so a process under nextest pays for a copy and a start-up, not for an initdb. Every
//!   [`database`] call creates a new database (`CREATE DATABASE`): tests never share one.
//! - Stopping: a watchdog process (`sh`, as the cluster's user, in its own process group so a terminal's Ctrl-C does
//!   not reach it) reads a pipe whose only writer is the test process. When the test process is gone for any reason
//!   (it exited, a test panicked, it was killed with SIGKILL), the pipe reaches end-of-file, and the watchdog stops
//!   the cluster (SIGQUIT to the postmaster: an immediate shutdown, which ends every backend) and removes the
//!   private directory. On a normal exit (passed or failed tests) an `atexit` hook closes the pipe itself and waits
//!   for the watchdog, so no postgres process is left when the test binary has exited. A stray cluster (its process
//!   and its watchdog both killed) shares nothing with the next run: another directory, another port, and the
//!   template's lock is a `flock`, which the kernel releases. Removing its directory by hand stops it within a
//!   minute (the postmaster rechecks its `postmaster.pid` once a minute).
#![allow(dead_code)]

use crate::common::skip;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The cluster's superuser (trust auth, no password): the user of every [`PgDb::url`].
pub const SUPERUSER: &str = "postgres";

/// Settings of every throwaway cluster (appended to the template's postgresql.conf; part of the template's key).
const SETTINGS: &str = "
# billd's test harness (tests/common/pg.rs): a throwaway cluster, durability off for speed.
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
timezone = 'UTC'
log_timezone = 'UTC'
logging_collector = off
";

/// The template's initdb arguments (after `-D DIR`; part of the template's key). 1 MB WAL segments instead of 16:
/// the data directory each process copies is 28 MB instead of 39.
const INITDB_ARGS: &[&str] =
    &["-U", SUPERUSER, "--auth=trust", "--locale=C", "--encoding=UTF8", "--no-sync", "--wal-segsize=1"];

/// Stops the cluster once the test process's end of its stdin is closed ($1: the private directory): SIGQUIT to the
/// postmaster (an immediate shutdown: it ends its backends and exits once they are gone), then waits (at most 10 s,
/// then SIGKILL) until its pid file is gone and it has exited (unlinking the pid file comes just before its exit; a
/// zombie not yet reaped by its new parent has exited), then removes the directory.
const WATCHDOG: &str = r#"
cat >/dev/null 2>&1
pidfile="$1/data/postmaster.pid"
alive() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = postgres ] && ! grep -q '^[0-9]* (postgres) [ZX]' "/proc/$1/stat"; }
if [ -f "$pidfile" ]; then
  pid=$(head -n 1 "$pidfile")
  kill -QUIT "$pid" 2>/dev/null
  i=0
  while { [ -f "$pidfile" ] || alive "$pid"; } && [ "$i" -lt 1000 ]; do sleep 0.01; i=$((i + 1)); done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$1"
"#;

/// A fresh, empty database of its own on this process's throwaway cluster.
pub struct PgDb {
    name: String,
    url: String,
    cluster: &'static Cluster,
}

impl PgDb {
    /// `postgres://postgres@127.0.0.1:PORT/NAME` (no password: the cluster trusts local connections).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cluster(&self) -> &'static Cluster {
        self.cluster
    }

    /// `psql` (of the cluster's bindir) connected to this database, reading nothing of the machine's (`-X`, no
    /// `PG*` variables), stopping at the first error; add `-c SQL` or a script.
    pub fn psql(&self) -> Command {
        self.cluster.psql(&self.url)
    }

    /// Runs SQL through psql and returns its unaligned, tuples-only output (`|` between columns), trimmed; fails
    /// the test with psql's error otherwise.
    pub fn sql(&self, sql: &str) -> String {
        let out = self.psql().args(["-At", "-c", sql]).output().expect("run psql");
        assert!(
            out.status.success(),
            "psql -c {sql:?} on {} failed: {}",
            self.url,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// This process's cluster.
pub struct Cluster {
    bindir: PathBuf,
    version: String,
    /// The private directory: `data/` (the cluster), `sock/` (its socket), `log`.
    dir: PathBuf,
    port: u16,
    /// The cluster's OS user as (uid, gid) when it is not this process's (root runs it as nobody).
    run_as: Option<(u32, u32)>,
    major: u32,
    started_in: Duration,
    template_was_cached: bool,
    next: AtomicUsize,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

/// Why there is no cluster: its binaries are missing (skip outside CI), or it failed to start (always a failure).
enum Unavailable {
    Missing(String),
    Broken(String),
}

static CLUSTER: OnceLock<Result<Cluster, Unavailable>> = OnceLock::new();

/// A fresh, empty database on this process's throwaway cluster (started by the first call). `None`, after a
/// `SKIPPED: …` line, when PostgreSQL is not installed here; under `CI=true` that fails the test instead.
pub fn database() -> Option<PgDb> {
    let cluster = match CLUSTER.get_or_init(Cluster::start) {
        Ok(c) => c,
        Err(Unavailable::Missing(why)) => {
            skip(&format!("this test needs a throwaway PostgreSQL cluster ({why})"));
            return None;
        }
        Err(Unavailable::Broken(why)) => panic!("the throwaway PostgreSQL cluster did not start: {why}"),
    };
    let name = format!("test_{}", cluster.next.fetch_add(1, Ordering::Relaxed) + 1);
    // FILE_COPY (PostgreSQL 15+) copies the template's files instead of WAL-logging every page: faster with fsync
    // off. template0 is always empty, whatever a test did to template1.
    let strategy = if cluster.major >= 15 { " STRATEGY = FILE_COPY" } else { "" };
    let admin = PgDb { name: "postgres".into(), url: cluster.url("postgres"), cluster };
    admin.sql(&format!("CREATE DATABASE {name} TEMPLATE template0{strategy}"));
    Some(PgDb { url: cluster.url(&name), name, cluster })
}

impl Cluster {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// `postgres --version`.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The private directory the watchdog removes (the data directory, the socket's, the server log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The postmaster's pid (from `postmaster.pid`).
    pub fn pid(&self) -> u32 {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).expect("read postmaster.pid");
        text.lines().next().and_then(|l| l.trim().parse().ok()).expect("a pid on postmaster.pid's first line")
    }

    /// The cluster's OS uid (nobody's when this process is root).
    pub fn uid(&self) -> u32 {
        self.run_as.map_or_else(|| unsafe { libc::geteuid() }, |(uid, _)| uid)
    }

    /// How long starting it took (copying or building the template, the start-up, not the first database).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Whether the template came from the cache (false: this process ran initdb).
    pub fn template_was_cached(&self) -> bool {
        self.template_was_cached
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    fn psql(&self, url: &str) -> Command {
        let mut c = Command::new(self.bindir.join("psql"));
        scrub(&mut c);
        // No password file, service file or SSL of the machine's: the cluster trusts 127.0.0.1 and has no SSL.
        c.env("PGPASSFILE", self.dir.join("no-passfile"))
            .env("PGSYSCONFDIR", self.dir.join("no-sysconfdir"))
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "10")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]);
        c
    }

    /// A command run as the cluster's user (nobody through setpriv when this process is root), without `PG*`
    /// variables.
    fn command(run_as: Option<(u32, u32)>, program: &Path) -> Command {
        let mut c = match run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}")).arg("--clear-groups").arg(program);
                c
            }
            None => Command::new(program),
        };
        scrub(&mut c);
        c
    }

    fn start() -> Result<Cluster, Unavailable> {
        let t0 = Instant::now();
        let bindir = find_bindir().ok_or_else(|| {
            Unavailable::Missing(
                "PostgreSQL not found: set PATH or install postgresql (looked for initdb, pg_ctl, postgres and psql \
                 in `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH)"
                    .into(),
            )
        })?;
        let run_as = if unsafe { libc::geteuid() } == 0 {
            if Command::new("setpriv").arg("--version").output().is_err() {
                return Err(Unavailable::Missing(
                    "running as root, and setpriv (util-linux) is missing to run PostgreSQL as nobody".into(),
                ));
            }
            Some(nobody().map_err(Unavailable::Broken)?)
        } else {
            None
        };
        let version = text(&Cluster::command(None, &bindir.join("postgres")).arg("--version").output())
            .map_err(|e| Unavailable::Broken(format!("postgres --version: {e}")))?;
        let major = version
            .split_once("(PostgreSQL) ")
            .and_then(|(_, v)| v.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        // The private directory, and at once its watchdog: whatever happens from here, it is removed.
        let dir = tempfile::Builder::new()
            .prefix("billd-pg-")
            .tempdir_in(parent_dir())
            .map_err(|e| Unavailable::Broken(format!("temp dir: {e}")))?
            .keep();
        chown(&dir, run_as).map_err(Unavailable::Broken)?;
        let mut watchdog = Cluster::command(run_as, Path::new("sh"))
            .args(["-c", WATCHDOG, "watchdog"])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| Unavailable::Broken(format!("start the watchdog: {e}")))?;
        let stdin = watchdog.stdin.take().expect("the watchdog's stdin");
        let mut cluster = Cluster {
            bindir,
            version,
            dir,
            port: 0,
            run_as,
            major,
            started_in: Duration::ZERO,
            template_was_cached: false,
            next: AtomicUsize::new(0),
            watchdog: Mutex::new(Some((watchdog, stdin))),
        };
        // From here a failure stops the watchdog (and with it whatever was started) before returning.
        let started = cluster.init().and_then(|()| cluster.start_postmaster());
        if let Err(e) = started {
            let log = cluster.log();
            cluster.stop();
            return Err(Unavailable::Broken(format!("{e}\n--- server log ---\n{log}")));
        }
        extern "C" fn stop_at_exit() {
            if let Some(Ok(c)) = CLUSTER.get() {
                c.stop();
            }
        }
        // SAFETY: registers a plain function; it runs at exit, after every test.
        unsafe { libc::atexit(stop_at_exit) };
        cluster.started_in = t0.elapsed();
        Ok(cluster)
    }

    /// The data directory, copied from the template (which the first process of a PostgreSQL version builds).
    fn init(&mut self) -> Result<(), String> {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pg-template");
        fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
        let key = format!(
            "{}-{:016x}",
            sanitize(&self.version),
            fnv(&[&self.bindir.to_string_lossy(), SETTINGS, &INITDB_ARGS.join(" ")])
        );
        let template = root.join(&key);
        let data = self.data_dir();
        let lock = File::create(root.join(format!("{key}.lock"))).map_err(|e| format!("template lock: {e}"))?;
        lock.lock().map_err(|e| format!("lock the template: {e}"))?;
        if template.join("PG_VERSION").is_file() {
            drop(lock);
            self.template_was_cached = true;
            return copy_tree(&template, &data, self.run_as);
        }
        let out =
            Cluster::command(self.run_as, &self.bindir.join("initdb")).arg("-D").arg(&data).args(INITDB_ARGS).output();
        text(&out).map_err(|e| format!("initdb: {e}"))?;
        let conf = data.join("postgresql.conf");
        let mut f = fs::OpenOptions::new().append(true).open(&conf).map_err(|e| format!("{}: {e}", conf.display()))?;
        f.write_all(SETTINGS.as_bytes()).map_err(|e| format!("{}: {e}", conf.display()))?;
        let partial = root.join(format!("{key}.partial"));
        let _ = fs::remove_dir_all(&partial);
        copy_tree(&data, &partial, None)?;
        fs::rename(&partial, &template).map_err(|e| format!("move the template into place: {e}"))
    }

    /// Starts the postmaster on a free port of 127.0.0.1 (another port if that one was taken meanwhile).
    fn start_postmaster(&mut self) -> Result<(), String> {
        let sock = self.dir.join("sock");
        fs::create_dir(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
        chown(&sock, self.run_as)?;
        let conf = self.data_dir().join("postgresql.conf");
        let mut last = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("find a free port: {e}"))?
                .port();
            let mut f =
                fs::OpenOptions::new().append(true).open(&conf).map_err(|e| format!("{}: {e}", conf.display()))?;
            let sock_dir = sock.to_string_lossy().replace('\'', "''");
            writeln!(f, "port = {port}\nunix_socket_directories = '{sock_dir}'").map_err(|e| e.to_string())?;
            let log_before = self.log().len();
            let out = Cluster::command(self.run_as, &self.bindir.join("pg_ctl"))
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.dir.join("log"))
                .output();
            match text(&out) {
                Ok(_) => {
                    self.port = port;
                    return Ok(());
                }
                Err(e) if self.log().get(log_before..).is_some_and(|l| l.contains("could not bind")) => last = e,
                Err(e) => return Err(format!("pg_ctl start: {e}")),
            }
        }
        Err(format!("pg_ctl start: no free port after 5 tries: {last}"))
    }

    /// Closes the watchdog's pipe and waits (at most 30 s) until it has stopped the cluster and removed its files.
    fn stop(&self) {
        let Some((mut child, stdin)) = self.watchdog.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return;
        };
        drop(stdin);
        let t0 = Instant::now();
        while matches!(child.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Where the private directories go: /dev/shm when it is a tmpfs with at least 1 GiB free (copying the data
/// directory and creating a database there take a tenth of the time they take on a busy ext4), else the temp dir.
fn parent_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    // SAFETY: statfs with a NUL-terminated path and a zeroed struct it fills.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::statfs(c"/dev/shm".as_ptr(), &mut fs) } == 0;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    if ok && fs.f_type as i64 == TMPFS_MAGIC && fs.f_bavail as u64 * fs.f_bsize as u64 >= 1 << 30 {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Removes every `PG*` variable (PGHOST, PGPORT, PGDATA, PGUSER, PGOPTIONS, PGTZ, …) from a command's environment.
fn scrub(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            c.env_remove(k);
        }
    }
}

/// The directory holding initdb, pg_ctl, postgres and psql: `pg_config --bindir`, else the highest
/// /usr/lib/postgresql/N/bin, else initdb's (symlinks followed) on PATH.
fn find_bindir() -> Option<PathBuf> {
    let complete = |d: &Path| ["initdb", "pg_ctl", "postgres", "psql"].iter().all(|b| d.join(b).is_file());
    let mut pg_config = Command::new("pg_config");
    scrub(&mut pg_config);
    if let Ok(dir) = text(&pg_config.arg("--bindir").output()) {
        let dir = PathBuf::from(dir);
        if complete(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, d)| complete(d))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter_map(|d| fs::canonicalize(d.join("initdb")).ok()?.parent().map(Path::to_path_buf))
        .find(|d| complete(d))
}

/// nobody's uid and its primary group's gid.
pub fn nobody() -> Result<(u32, u32), String> {
    // SAFETY: getpwnam with a NUL-terminated name; the fields are read at once, before any other getpw* call (the
    // tests do not call it elsewhere).
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    if pw.is_null() {
        return Err("running as root, and there is no user nobody to run PostgreSQL as".into());
    }
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn chown(path: &Path, run_as: Option<(u32, u32)>) -> Result<(), String> {
    match run_as {
        Some((uid, gid)) => {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", path.display()))
        }
        None => Ok(()),
    }
}

/// Copies a data directory (directories 0700, files with their modes), owned by `run_as` when given.
fn copy_tree(from: &Path, to: &Path, run_as: Option<(u32, u32)>) -> Result<(), String> {
    let err = |p: &Path, e: std::io::Error| format!("copy {}: {e}", p.display());
    fs::DirBuilder::new().mode(0o700).create(to).map_err(|e| err(to, e))?;
    chown(to, run_as)?;
    for entry in fs::read_dir(from).map_err(|e| err(from, e))? {
        let entry = entry.map_err(|e| err(from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(|e| err(&src, e))?.is_dir() {
            copy_tree(&src, &dst, run_as)?;
        } else {
            fs::copy(&src, &dst).map_err(|e| err(&src, e))?;
            chown(&dst, run_as)?;
        }
    }
    Ok(())
}

/// A command's trimmed stdout if it ran and succeeded; otherwise what went wrong, with its output.
fn text(out: &std::io::Result<Output>) -> Result<String, String> {
    match out {
        Err(e) => Err(e.to_string()),
        Ok(o) if !o.status.success() => {
            Err(format!("{}\n{}{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
        }
        Ok(o) => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
    }
}

/// A name made of `[A-Za-z0-9.-]` only.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect()
}

/// FNV-1a over the parts (a template key that stays the same from one Rust release to the next).
fn fnv(parts: &[&str]) -> u64 {
    parts
        .iter()
        .flat_map(|p| p.bytes().chain([0]))
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
