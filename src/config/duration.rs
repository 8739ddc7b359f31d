//! Human durations used in the config (`30s`, `5m`, `1h`, `1d`): parsing and display.

use std::time::Duration;

/// The longest duration the config accepts (a timeout, a retry delay): a year. Longer ones are typos, and date
/// arithmetic with them could leave the calendar's range.
pub const MAX: Duration = Duration::from_secs(365 * 86_400);

/// Parses `N` followed by one unit: `ms`, `s`, `m`, `h`, `d`. Whitespace between number and unit is allowed. At
/// most [`MAX`] (a year).
pub fn parse(text: &str) -> Result<Duration, String> {
    let q = crate::text::quote(text);
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("{q} is not a duration: expected a number and a unit, like 30s, 5m, 1h or 1d"));
    }
    let per_unit = match unit.trim() {
        "ms" => None,
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        "d" => Some(86_400),
        "" => return Err(format!("{q} has no unit: write it like 30s, 5m, 1h or 1d")),
        other => {
            let other = crate::text::quote(other);
            return Err(format!("{q} has an unknown unit {other}: use ms, s, m, h or d (30s, 5m, 1h, 1d)"));
        }
    };
    let d = num.parse::<u64>().ok().and_then(|n| match per_unit {
        None => Some(Duration::from_millis(n)),
        Some(size) => n.checked_mul(size).map(Duration::from_secs),
    });
    d.filter(|d| *d <= MAX).ok_or_else(|| format!("{q} is longer than a year (at most 365d)"))
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
        for bad in ["", "d", "5", "5x", "1.5h", "-1d", "99999999999999999999d", "1 month", "999999999d", "366d"] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn at_most_a_year() {
        assert_eq!(parse("365d").unwrap(), MAX);
        assert_eq!(parse("8760h").unwrap(), MAX);
        for long in ["366d", "999999999d", "8761h", "31536001s", "31536000001ms"] {
            let e = parse(long).unwrap_err();
            assert!(e.contains("longer than a year"), "{long}: {e}");
        }
        let e = parse(&format!("{}d", "9".repeat(10_000))).unwrap_err();
        assert!(e.len() < 400, "the whole input was echoed: {} bytes", e.len());
    }

    #[test]
    fn formats_round_trip() {
        for s in ["30s", "5m", "1h", "4d", "250ms", "90s"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
