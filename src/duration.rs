//! The duration syntax of spec and configuration files: `90s`, `5m`,
//! `1h30m`, `2d`, `250ms`. A sequence of `<digits><unit>` groups with units
//! `d`, `h`, `m`, `s`, `ms`, largest first, each unit at most once.

use std::time::Duration;

/// Parses `90s`, `5m`, `1h30m`, `2d`, `250ms`.
///
/// The error message says what to write instead, for use in spec errors.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let hint = "write a duration such as 90s, 5m, 1h30m or 2d (units: d, h, m, s, ms)";
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration: {hint}"));
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: u128 = 0;
    // rank of the last unit, to enforce largest-first and no repeats
    let mut last_rank = usize::MAX;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("`{text}` is not a duration: {hint}"));
        }
        let number: u128 = s[start..i]
            .parse()
            .map_err(|_| format!("`{text}` is too large: {hint}"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let (rank, millis) = match &s[unit_start..i] {
            "d" => (0, 86_400_000),
            "h" => (1, 3_600_000),
            "m" => (2, 60_000),
            "s" => (3, 1_000),
            "ms" => (4, 1),
            "" => return Err(format!("`{text}` lacks a unit: {hint}")),
            other => return Err(format!("`{text}` has an unknown unit `{other}`: {hint}")),
        };
        if last_rank != usize::MAX && rank <= last_rank {
            return Err(format!(
                "`{text}`: units must go from largest to smallest, each once: {hint}"
            ));
        }
        last_rank = rank;
        total = total
            .checked_add(number.checked_mul(millis).ok_or("overflow")?)
            .ok_or_else(|| format!("`{text}` is too large: {hint}"))?;
    }
    if total > u64::MAX as u128 / 2 {
        return Err(format!("`{text}` is too large: {hint}"));
    }
    Ok(Duration::from_millis(total as u64))
}

/// Formats a duration in the same syntax, the shortest exact form.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Serde adapter for `Duration` fields written in this syntax.
pub mod serde_text {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_bad_forms_with_a_hint() {
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "1m1h",
            "1m1m",
            "-5s",
            "5 m",
            "1.5h",
            "99999999999999999999999d",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["90s", "5m", "1h30m", "2d", "250ms", "1d2h3m4s5ms"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }
}
