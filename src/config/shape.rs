//! The shape of `schedules.toml` checked before it is deserialized: every unknown key (with the known key it
//! resembles) and every value of the wrong kind is reported with its full path, and left out.

use figment::value::{Dict, Value};

/// What a key holds.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    /// A date as text in quotes (`"2025-03-01"`).
    Date,
    Whole,
    Number,
    /// Text or a whole number (a secret from the environment may look like a number).
    TextOrWhole,
    Texts,
    Flag,
    Table(&'static [(&'static str, Kind)]),
    Tables(&'static [(&'static str, Kind)]),
}

use Kind::*;

const BILLING: &[(&str, Kind)] = &[
    ("timezone", Text),
    ("charge_time", Text),
    ("database", Text),
    ("database_password", TextOrWhole),
    ("database_password_file", Text),
    ("merchant_uid_prefix", Text),
    ("catch_up_window", Text),
    ("lease", Text),
];
const GATEWAY: &[(&str, Kind)] = &[
    ("base_url", Text),
    ("imp_key", Text),
    ("imp_secret", TextOrWhole),
    ("imp_secret_file", Text),
    ("timeout", Text),
    ("concurrency", Whole),
    ("rate_limit", Number),
    ("proxy", Text),
];
const DUNNING: &[(&str, Kind)] = &[("retry_after", Texts), ("on_exhausted", Text)];
const LIMITS: &[(&str, Kind)] = &[
    ("max_amount", Whole),
    ("max_charges_per_pass", Whole),
    ("mass_rejection_count", Whole),
    ("mass_rejection_percent", Whole),
];
const METRICS: &[(&str, Kind)] = &[("listen", Text)];
const WEBHOOKS: &[(&str, Kind)] = &[
    ("url", Text),
    ("secret_file", Text),
    ("timeout", Text),
    ("max_age", Text),
    ("concurrency", Whole),
    ("retain", Text),
];
const NOTICES: &[(&str, Kind)] = &[("listen", Text)];
const PLAN: &[(&str, Kind)] = &[
    ("id", Text),
    ("name", Text),
    ("amount", Whole),
    ("currency", Text),
    ("interval", Text),
    ("trial", Text),
    ("periods", Whole),
];
const DISCOUNT: &[(&str, Kind)] = &[("percent", Whole), ("amount", Whole), ("periods", Whole)];
const SUBSCRIPTION: &[(&str, Kind)] = &[
    ("id", Text),
    ("customer_uid", Text),
    ("plan", Text),
    ("start", Date),
    ("status", Text),
    ("catch_up", Flag),
    ("amount", Whole),
    ("discount", Table(DISCOUNT)),
    ("trial_ends", Date),
    ("cancel_at", Date),
    ("periods", Whole),
    ("end", Date),
];
const TOP: &[(&str, Kind)] = &[
    ("billing", Table(BILLING)),
    ("gateway", Table(GATEWAY)),
    ("dunning", Table(DUNNING)),
    ("limits", Table(LIMITS)),
    ("metrics", Table(METRICS)),
    ("webhooks", Table(WEBHOOKS)),
    ("notices", Table(NOTICES)),
    ("plans", Tables(PLAN)),
    ("subscriptions", Tables(SUBSCRIPTION)),
];

/// Reports every unknown key (removed) and every value of the wrong kind (replaced by a stand-in) in `tree`;
/// `left_out` gets the path of each replaced value, as problems name it, so that nothing more is said of it.
pub fn check(tree: &mut Value, problems: &mut Vec<String>, left_out: &mut Vec<String>) {
    if let Value::Dict(_, dict) = tree {
        table(dict, TOP, "", "", problems, left_out);
    }
}

fn table(
    dict: &mut Dict,
    keys: &[(&'static str, Kind)],
    shown: &str,
    plain: &str,
    problems: &mut Vec<String>,
    left_out: &mut Vec<String>,
) {
    let join = |base: &str, k: &str| if base.is_empty() { k.to_string() } else { format!("{base}.{k}") };
    let names: Vec<String> = dict.keys().cloned().collect();
    for name in names {
        let Some(&(_, kind)) = keys.iter().find(|(k, _)| *k == name) else {
            let hint = nearest(&name, keys).map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default();
            let known: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
            let plain_name = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && name.len() <= 64;
            let shown_name = if plain_name { name.clone() } else { crate::text::quote(&name) };
            problems.push(format!(
                "{}: unknown key{hint}; the keys here are {}",
                join(shown, &shown_name),
                known.join(", ")
            ));
            dict.remove(&name);
            continue;
        };
        let value = dict.get_mut(&name).expect("a key just listed");
        let (shown_here, plain_here) = (join(shown, &name), join(plain, &name));
        match (kind, &mut *value) {
            (Table(inner), Value::Dict(_, d)) => table(d, inner, &shown_here, &plain_here, problems, left_out),
            (Tables(inner), Value::Array(_, items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let id = match item {
                        Value::Dict(_, d) => d.get("id").and_then(Value::as_str).map(crate::text::quote),
                        _ => None,
                    };
                    let shown_item = match id {
                        Some(id) => format!("{shown_here}[{i}] (id {id})"),
                        None => format!("{shown_here}[{i}]"),
                    };
                    let plain_item = format!("{plain_here}[{i}]");
                    match item {
                        Value::Dict(_, d) => table(d, inner, &shown_item, &plain_item, problems, left_out),
                        other => problems.push(format!("{shown_item}: must be a table, not {}", name_of(other))),
                    }
                }
            }
            (kind, v) if !fits(kind, v) => {
                problems.push(format!("{shown_here}: must be {}, not {}", want(kind), name_of(v)));
                // A stand-in of the right kind, so that the rest of the file is still checked; what the rules
                // then say of this key is not repeated (`left_out`).
                // A table left out entirely (an optional one, like a discount: a stand-in would be read as one).
                if let Table(_) = kind {
                    dict.remove(&name);
                    left_out.push(shown_here);
                    continue;
                }
                *v = match kind {
                    Whole | TextOrWhole => Value::from(1i64),
                    Number => Value::from(1.0f64),
                    Texts => Value::from(Vec::<String>::new()),
                    Flag => Value::from(false),
                    _ => Value::from(String::new()),
                };
                left_out.push(shown_here);
            }
            _ => {}
        }
    }
}

/// A whole number's value, whatever its width or sign.
fn whole_value(v: &Value) -> Option<i128> {
    match v {
        Value::Num(_, n) => n.to_i128().or_else(|| n.to_u128().and_then(|u| i128::try_from(u).ok())),
        _ => None,
    }
}

fn fits(kind: Kind, v: &Value) -> bool {
    let whole = |v: &Value| whole_value(v).is_some();
    match kind {
        Text | Date => matches!(v, Value::String(..)),
        Whole => matches!(v, Value::Num(..)) && whole(v),
        Number => matches!(v, Value::Num(..)),
        TextOrWhole => matches!(v, Value::String(..)) || (matches!(v, Value::Num(..)) && whole(v)),
        Texts => matches!(v, Value::Array(..)),
        Flag => matches!(v, Value::Bool(..)),
        Table(_) => matches!(v, Value::Dict(..)),
        Tables(_) => matches!(v, Value::Array(..)),
    }
}

fn want(kind: Kind) -> &'static str {
    match kind {
        Text => "text in quotes",
        Date => "a date in quotes, like \"2025-03-01\" (YYYY-MM-DD)",
        Whole => "a whole number",
        Number => "a number",
        TextOrWhole => "text in quotes",
        Texts => "a list of texts, like [\"1d\", \"2d\"]",
        Flag => "true or false",
        Table(inner) if std::ptr::eq(inner, DISCOUNT) => {
            "a table like { percent = 20, periods = 3 } or { amount = 1000, periods = 3 }"
        }
        Table(_) => "a table",
        Tables(_) => "a list of tables ([[…]])",
    }
}

fn name_of(v: &Value) -> String {
    match v {
        Value::String(_, s) => format!("the text {}", crate::text::quote(s)),
        Value::Char(..) => "a character".into(),
        Value::Bool(_, b) => format!("{b}"),
        Value::Num(_, n) => match (whole_value(v), n.to_f64()) {
            (Some(i), _) => format!("the number {i}"),
            (None, Some(f)) => format!("the number {f}"),
            _ => "a number".into(),
        },
        Value::Empty(..) => "nothing".into(),
        // A TOML date or time written without quotes (figment keeps it as a table of one private key).
        Value::Dict(_, d) if d.len() == 1 && d.keys().all(|k| k.contains("toml_private_datetime")) => {
            match d.values().next().and_then(Value::as_str) {
                Some(t) => format!("the TOML date {} (without quotes)", crate::text::quote(t)),
                None => "a TOML date without quotes".into(),
            }
        }
        Value::Dict(..) => "a table".into(),
        Value::Array(..) => "a list".into(),
    }
}

/// The known key closest to `name` (at most two edits away, or one for short keys).
fn nearest(name: &str, keys: &[(&'static str, Kind)]) -> Option<&'static str> {
    let limit = if name.len() <= 4 { 1 } else { 2 };
    keys.iter()
        .map(|(k, _)| (*k, distance(name, k)))
        .filter(|(_, d)| *d <= limit)
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}

/// Edit distance (insertions, deletions, substitutions, and swaps of neighbours).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// A figment path (`["plans", "1", "amount"]`) written as billd writes key paths: `plans[1].amount`.
pub fn path_of(segments: &[String]) -> String {
    let mut out = String::new();
    for s in segments {
        if !out.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
            out += &format!("[{s}]");
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out += s;
        }
    }
    out
}

/// A deserializer's message with Rust's type names put plainly.
pub fn plain_types(message: &str) -> String {
    [
        ("i64", "a whole number"),
        ("u64", "a whole number"),
        ("f64", "a number"),
        ("a string", "text in quotes"),
        ("a sequence", "a list"),
        ("a map", "a table"),
        ("struct ", "table "),
    ]
    .iter()
    .fold(message.to_string(), |m, (rust, plain)| m.replace(rust, plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_keys_and_paths() {
        assert_eq!(nearest("chrage_time", BILLING), Some("charge_time"));
        assert_eq!(nearest("timezne", BILLING), Some("timezone"));
        assert_eq!(nearest("whatever", BILLING), None);
        assert_eq!(path_of(&["plans".into(), "1".into(), "amount".into()]), "plans[1].amount");
        assert_eq!(
            plain_types("invalid type: found string \"x\", expected i64"),
            "invalid type: found string \"x\", expected a whole number"
        );
    }
}
