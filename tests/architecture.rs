//! The shape of the code, checked (ARCHITECTURE.md): no two modules import each other (directly or through a
//! loop), nothing imports `cli`, SQLite and HTTP types stay in their adapters, the billing rules do no I/O, and every
//! file says in its first line what it owns (and why, if it is long).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A source file under src/, as the module it is (`store::sqlite::ledger`) and its text.
struct Module {
    path: String,
    file: PathBuf,
    text: String,
}

fn modules() -> Vec<Module> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&file).unwrap();
            Module { path: parts.join("::"), file, text }
        })
        .collect()
}

/// The code of a file without its comments (so a doc line naming `crate::cli` is not an import).
fn code(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Every `crate::a::b::c` path the file names, as the module it lands in (the longest known module prefix).
fn imports(m: &Module, known: &BTreeSet<String>) -> BTreeSet<String> {
    let code = code(&m.text);
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let target = (1..=segments.len()).rev().map(|n| segments[..n].join("::")).find(|p| known.contains(p));
        if let Some(t) = target {
            out.insert(t);
        }
    }
    // `super::x` names a sibling module (or an item of the parent, which is not an edge).
    let parent = m.path.rsplit_once("::").map_or("", |(p, _)| p);
    let mut rest = code.as_str();
    while let Some(i) = rest.find("super::") {
        rest = &rest[i + "super::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let sibling = if parent.is_empty() { name } else { format!("{parent}::{name}") };
        if known.contains(&sibling) && sibling != m.path {
            out.insert(sibling);
        }
    }
    out
}

fn top(path: &str) -> &str {
    path.split("::").next().unwrap()
}

fn is_ancestor(a: &str, b: &str) -> bool {
    b.starts_with(&format!("{a}::"))
}

/// A loop in `graph`, if there is one, as the modules along it.
fn find_loop(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        stack.push(n.to_owned());
        for next in graph.get(n).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|s| s == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if !state.contains_key(n.as_str())
            && let Some(c) = visit(n, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_two_modules_import_each_other() {
    let mods = modules();
    let known: BTreeSet<String> = mods.iter().map(|m| m.path.clone()).filter(|p| !p.is_empty()).collect();
    // Between the top-level modules (billing, store, engine, ...): no loop at all.
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Between files: no loop either, a module using its own parent's items aside (that is one folder's inside).
    let mut files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &mods {
        for t in imports(m, &known) {
            if top(&t) != top(&m.path) {
                tops.entry(top(&m.path).to_owned()).or_default().insert(top(&t).to_owned());
            }
            if t != m.path && !is_ancestor(&t, &m.path) && !is_ancestor(&m.path, &t) {
                files.entry(m.path.clone()).or_default().insert(t);
            }
        }
    }
    if let Some(c) = find_loop(&tops) {
        panic!("the top-level modules import each other in a loop: {}\nedges: {tops:#?}", c.join(" -> "));
    }
    // The SQLite adapter's files still use each other's helpers both ways (its trait impls sit beside the helpers
    // other files use); issue 27's move of its logic into `store/sql/` untangles them. No new loop: these edges are
    // the only ones allowed back.
    const KNOWN: &[(&str, &str)] = &[
        ("store::sql::stale", "store::sql::ledger"),
        ("store::sql::events", "store::sql::outbox"),
        ("store::sql::lifecycle", "store::sql::book"),
        ("store::sql::credit", "store::sql::book"),
        ("store::sql::ledger", "store::sql::book"),
        ("store::sql::changes", "store::sql::book"),
        ("store::sql::sync", "store::sql::book"),
        ("store::sql::stale", "store::sql::book"),
        ("store::sql::record", "store::sql::book"),
        ("store::sql::one_time", "store::sql::outbox"),
        ("store::sql::views", "store::sql::book"),
    ];
    for (from, to) in KNOWN {
        let there = files.get_mut(*from).is_some_and(|edges| edges.remove(*to));
        assert!(there, "{from} no longer imports {to}: take the edge off the list of known loops");
    }
    if let Some(c) = find_loop(&files) {
        panic!("modules import each other in a loop: {}", c.join(" -> "));
    }
    let cli_users: Vec<&str> =
        tops.iter().filter(|(_, to)| to.contains("cli")).map(|(from, _)| from.as_str()).collect();
    assert!(cli_users.is_empty(), "cli parses and dispatches; nothing may import it, yet {cli_users:?} do");
}

/// The modules a crate's types may appear in: the adapters that own them.
#[test]
fn sqlite_and_http_types_stay_in_their_adapters() {
    for m in modules() {
        let code = code(&m.text);
        // The webhook delivery service has an HTTP client of its own (issue 26), beside the gateway's.
        for (krate, homes) in [
            ("rusqlite", &["store::sqlite"][..]),
            ("tokio_postgres", &["store::postgres"][..]),
            ("reqwest", &["gateway::iamport", "webhooks::deliver"]),
        ] {
            let inside = homes.iter().any(|home| m.path == *home || is_ancestor(home, &m.path));
            assert!(
                inside || !code.contains(&format!("{krate}::")),
                "{} uses {krate}; only {homes:?} may (the others see the contract)",
                m.file.display()
            );
        }
    }
}

/// The store writes only inside a write transaction (`SqlStore::tx`), never on the bare connection: PostgreSQL puts
/// writers one at a time there, and a conditional write outside one would be decided on a snapshot another writer is
/// changing.
#[test]
fn the_store_writes_only_in_a_write_transaction() {
    for m in modules().into_iter().filter(|m| m.path.starts_with("store::sql::")) {
        let code = code(&m.text);
        for bare in ["db().execute(", "db().query_row(\"INSERT", "db().query_row(\"UPDATE", "db().query_row(\"DELETE"] {
            assert!(!code.contains(bare), "{} writes on the bare connection ({bare}): use self.tx()", m.file.display());
        }
    }
}

/// The engine, the commands and the service see the contracts only: the one module that names an adapter is `app`,
/// which picks them (unit tests aside: they build an engine on a real SQLite file).
#[test]
fn only_app_names_an_adapter() {
    for m in modules() {
        let code = code(&m.text);
        for (adapter, home) in
            [("store::sqlite", "store"), ("store::postgres", "store"), ("gateway::iamport", "gateway")]
        {
            let allowed = m.path == "app" || top(&m.path) == home || m.path.ends_with("::tests");
            assert!(
                allowed || !code.contains(adapter),
                "{} names {adapter}; it should see only the {home} contract (app picks the adapter)",
                m.file.display()
            );
        }
    }
}

#[test]
fn the_billing_rules_do_no_io_and_take_the_clock_as_an_argument() {
    for m in modules().into_iter().filter(|m| top(&m.path) == "billing") {
        let code = code(&m.text);
        for banned in
            ["Utc::now", "Local::now", "SystemTime", "Instant::now", "std::fs", "std::net", "tokio", "tracing::"]
        {
            assert!(!code.contains(banned), "{} (a billing rule) uses {banned}", m.file.display());
        }
        for other in ["store", "engine", "gateway", "service", "commands", "config", "app", "cli"] {
            assert!(
                !code.contains(&format!("crate::{other}")),
                "{} (a billing rule) imports crate::{other}",
                m.file.display()
            );
        }
    }
}

#[test]
fn every_file_says_what_it_owns_and_why_it_is_long() {
    for m in modules() {
        let first = m.text.lines().next().unwrap_or("");
        assert!(first.starts_with("//! "), "{} does not open with a one-line //! doc", m.file.display());
        let lines = m.text.lines().count();
        assert!(
            lines <= 600 || first.contains("(long: "),
            "{} has {lines} lines; split it, or say why in its first line (\"(long: …)\")",
            m.file.display()
        );
    }
}

/// Issue 23, point 7: `demo.sh` printed nothing for minutes while it built billd quietly. Its build shows cargo's
/// progress, and says first that the first build takes a few minutes.
#[test]
fn the_demo_shows_its_build_progress() {
    let demo = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/demo.sh")).unwrap();
    let build = demo.lines().find(|l| l.trim_start().starts_with("cargo build")).expect("demo.sh builds billd");
    assert!(!build.contains("--quiet") && !build.split_whitespace().any(|w| w == "-q"), "{build}");
    assert!(demo.contains("the first build takes a few minutes"), "demo.sh does not say it is building");
}
