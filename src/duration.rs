//! Human durations used in the config (`30s`, `5m`, `1h`, `1d`): parsing and display.

use std::time::Duration;

/// Parses `N` followed by one unit: `ms`, `s`, `m`, `h`, `d`. Whitespace between number and unit is allowed.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("{text:?} is not a duration: expected a number and a unit, like 30s, 5m, 1h or 1d"));
    }
    let n: u64 = num.parse().map_err(|_| format!("{text:?} is not a duration: the number is too large"))?;
    let secs = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        "" => {
            return Err(format!("{text:?} has no unit: write it like 30s, 5m, 1h or 1d"));
        }
        other => {
            return Err(format!("{text:?} has an unknown unit {other:?}: use ms, s, m, h or d (30s, 5m, 1h, 1d)"));
        }
    };
    secs.map(Duration::from_secs).ok_or_else(|| format!("{text:?} is too long a duration"))
}

/// Formats a duration the way the config writes it (largest exact unit).
pub fn format(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s.is_multiple_of(size) {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse(" 3 d ").unwrap(), Duration::from_secs(259_200));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "d", "5", "5x", "1.5h", "-1d", "99999999999999999999d", "1 month"] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["30s", "5m", "1h", "4d", "250ms", "90s"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
