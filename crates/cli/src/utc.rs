//! UTC calendar times for the command line: printing a [`Timestamp`] as RFC 3339
//! (`2026-12-03T14:05:09.250Z`) and reading one back (`--before`). The store keeps integer
//! milliseconds since the Unix epoch; these two functions are the only place the CLI turns them
//! into dates, with the proleptic Gregorian calendar (H. Hinnant's `days_from_civil`).

use leasehold_core::Timestamp;

const MS_PER_DAY: i64 = 86_400_000;

/// `t` as an RFC 3339 UTC time with milliseconds: `2026-12-03T14:05:09.250Z`.
pub(crate) fn format(t: Timestamp) -> String {
    let ms = t.as_millis();
    let days = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / 1_000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3_600,
        (secs % 3_600) / 60,
        secs % 60,
        in_day % 1_000
    )
}

/// Reads an RFC 3339 time (`2026-12-03T14:05:09Z`, with optional fractional seconds and a `Z`
/// or `±HH:MM` offset; a space may stand for the `T`) or a bare date (`2026-12-03`, midnight
/// UTC). The error says what was expected.
pub(crate) fn parse(raw: &str) -> Result<Timestamp, String> {
    const EXPECTED: &str =
        "expected an RFC 3339 time such as 2026-12-03T14:05:09Z, or a date such as 2026-12-03";
    let s = raw.trim();
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (y, m, d) = parse_date(date).ok_or(EXPECTED)?;
    let mut ms = days_from_civil(y, m, d) * MS_PER_DAY;
    if let Some(rest) = rest {
        let (clock, offset_min) = split_offset(rest).ok_or(EXPECTED)?;
        ms += parse_clock(clock).ok_or(EXPECTED)?;
        ms -= offset_min * 60_000;
    }
    Ok(Timestamp(ms))
}

/// `YYYY-MM-DD` with a real day of that month.
fn parse_date(s: &str) -> Option<(i64, u32, u32)> {
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (digits(y)?, digits(m)?, digits(d)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (1..=days_in_month).contains(&d).then_some((y, m, d))
}

/// Splits `HH:MM:SS[.fff]` from its `Z` or `±HH:MM` offset (in minutes east of UTC).
fn split_offset(s: &str) -> Option<(&str, i64)> {
    if let Some(clock) = s.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    let i = s.rfind(['+', '-'])?;
    let (clock, offset) = (&s[..i], &s[i + 1..]);
    let (h, m) = offset.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i64, i64) = (digits(h)?, digits(m)?);
    if h > 23 || m > 59 {
        return None;
    }
    let sign = if s.as_bytes()[i] == b'-' { -1 } else { 1 };
    Some((clock, sign * (h * 60 + m)))
}

/// `HH:MM:SS[.fff…]` as milliseconds into the day (fractions past milliseconds are dropped).
fn parse_clock(s: &str) -> Option<i64> {
    let (hms, frac) = match s.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (s, None),
    };
    let mut parts = hms.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || h.len() != 2 || m.len() != 2 || sec.len() != 2 {
        return None;
    }
    let (h, m, sec): (i64, i64, i64) = (digits(h)?, digits(m)?, digits(sec)?);
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let ms = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            let three: String = f.chars().chain("00".chars()).take(3).collect();
            three.parse().ok()?
        }
        Some(_) => return None,
    };
    Some(((h * 60 + m) * 60 + sec) * 1_000 + ms)
}

/// ASCII digits only (no sign, no spaces) as a number.
fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format(Timestamp(1_796_306_709_250)),
            "2026-12-03T14:05:09.250Z"
        );
        assert_eq!(
            format(Timestamp(951_782_400_000)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(format(Timestamp(-1)), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for ms in [0, 1_796_306_709_250, 951_782_400_000, 4_102_444_800_123] {
            assert_eq!(parse(&format(Timestamp(ms))), Ok(Timestamp(ms)));
        }
        assert_eq!(
            parse("2026-12-03T14:05:09Z"),
            Ok(Timestamp(1_796_306_709_000))
        );
        assert_eq!(
            parse("2026-12-03 16:05:09.25+02:00"),
            Ok(Timestamp(1_796_306_709_250))
        );
        assert_eq!(parse("2026-12-03"), Ok(Timestamp(1_796_256_000_000)));
    }

    #[test]
    fn refuses_malformed_times() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-29",
            "2026-12-03T25:00:00Z",
            "2026-12-03T14:05Z",
            "2026-12-03T14:05:09",
            "2026-12-03T14:05:09.Z",
            "2026-12-03T14:05:09+2",
            "+2026-12-03",
        ] {
            assert!(parse(bad).unwrap_err().contains("RFC 3339"), "{bad:?}");
        }
    }
}
