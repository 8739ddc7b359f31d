//! The store's SQL (written once, in the dialect both databases share) as PostgreSQL runs it: numbered parameters
//! `?N` → `$N`, SQLite's index hints dropped, `x = y COLLATE NOCASE` → `lower(x) = lower(y)`, `json_extract`.

/// The statement `sql` (the store's own SQL, never input) as PostgreSQL runs it.
pub fn translate(sql: &str) -> String {
    let sql = without_index_hints(sql);
    let sql = nocase(&sql);
    let sql = json_extract(&sql);
    parameters(&sql)
}

/// `?N` → `$N`, outside string literals.
fn parameters(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '?' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// `INDEXED BY name` (SQLite's index hint) removed: PostgreSQL's planner picks the index.
fn without_index_hints(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find(" INDEXED BY ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " INDEXED BY ".len()..];
        let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// One operand of a comparison, as written next to `=`: a name (`p.merchant_uid`), a parameter (`?1`) or a quoted
/// string.
fn operand_before(s: &str) -> usize {
    let trimmed = s.trim_end();
    trimmed
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '?' || c == '\''))
        .map_or(0, |i| i + 1)
}

/// `a = b COLLATE NOCASE` → `lower(a) = lower(b COLLATE "C")`: ASCII case folding, as SQLite's NOCASE (the
/// schema's text columns are `COLLATE "C"`, and its indexes of such columns are on `lower(column)`).
fn nocase(sql: &str) -> String {
    const NOCASE: &str = " COLLATE NOCASE";
    let mut out = sql.to_string();
    while let Some(at) = out.find(NOCASE) {
        let before = &out[..at];
        // The right operand ends where COLLATE begins; the left one ends at ` = ` (or `<>`).
        let right_start = operand_before(before);
        let right = before[right_start..].to_string();
        let head = before[..right_start].trim_end();
        let (op, head) = if let Some(h) = head.strip_suffix("<>") {
            ("<>", h.trim_end())
        } else if let Some(h) = head.strip_suffix('=') {
            ("=", h.trim_end())
        } else {
            panic!("COLLATE NOCASE outside a comparison in {sql:?}")
        };
        let left_start = operand_before(head);
        let left = &head[left_start..];
        let rewritten = format!("{}lower({left}) {op} lower({right} COLLATE \"C\")", &head[..left_start]);
        out = format!("{rewritten}{}", &out[at + NOCASE.len()..]);
    }
    out
}

/// `json_extract(col, '$.key')` → `(CAST(col AS jsonb) ->> 'key')`.
fn json_extract(sql: &str) -> String {
    const CALL: &str = "json_extract(";
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find(CALL) {
        out.push_str(&rest[..i]);
        let after = &rest[i + CALL.len()..];
        let close = after.find(')').expect("json_extract(...) is closed");
        let (col, path) = after[..close].split_once(',').expect("json_extract(column, '$.key')");
        let key = path.trim().trim_matches('\'').strip_prefix("$.").expect("a '$.key' path");
        out.push_str(&format!("(CAST({} AS jsonb) ->> '{key}')", col.trim()));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn parameters_are_numbered_with_a_dollar_outside_quotes() {
        assert_eq!(
            translate("SELECT 1 WHERE a = ?1 AND b = ?12 AND c = '?3'"),
            "SELECT 1 WHERE a = $1 AND b = $12 AND c = '?3'"
        );
    }

    #[test]
    fn index_hints_are_dropped() {
        assert_eq!(
            translate("SELECT x FROM outbox o INDEXED BY outbox_pending_seq WHERE o.seq > ?1"),
            "SELECT x FROM outbox o WHERE o.seq > $1"
        );
    }

    #[test]
    fn nocase_comparisons_compare_lowered_operands() {
        assert_eq!(
            translate("SELECT 1 FROM periods WHERE merchant_uid = ?1 COLLATE NOCASE LIMIT 1"),
            "SELECT 1 FROM periods WHERE lower(merchant_uid) = lower($1 COLLATE \"C\") LIMIT 1"
        );
        assert_eq!(
            translate("WHERE o.merchant_uid = plan_changes.merchant_uid COLLATE NOCASE)"),
            "WHERE lower(o.merchant_uid) = lower(plan_changes.merchant_uid COLLATE \"C\"))"
        );
        assert_eq!(
            translate("WHERE id = ?1 COLLATE NOCASE AND id <> ?1 LIMIT 1"),
            "WHERE lower(id) = lower($1 COLLATE \"C\") AND id <> $1 LIMIT 1"
        );
    }

    #[test]
    fn json_fields_are_read_as_jsonb() {
        assert_eq!(
            translate("SELECT json_extract(detail, '$.reason') FROM events"),
            "SELECT (CAST(detail AS jsonb) ->> 'reason') FROM events"
        );
    }
}
