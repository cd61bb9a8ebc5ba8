//! Image timestamps: RFC 3339 strings or `now`, as dockerTools accepts them.

use std::time::{SystemTime, UNIX_EPOCH};

/// A timestamp as written into the config (`created`) and as file mtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    pub rfc3339: String,
    pub epoch: u64,
}

impl Timestamp {
    /// dockerTools' default, one second after the epoch.
    pub fn default_image_time() -> Self {
        Timestamp { rfc3339: "1970-01-01T00:00:01Z".into(), epoch: 1 }
    }

    /// Parses `now`, seconds since the epoch, or RFC 3339
    /// (`2024-05-01T12:00:00Z`, fractional seconds and offsets allowed).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "now" {
            let epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
            return Ok(Self::from_epoch(epoch));
        }
        if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
            let epoch = s.parse().map_err(|_| format!("`{s}` is not a valid time"))?;
            return Ok(Self::from_epoch(epoch));
        }
        let epoch = parse_rfc3339(s).ok_or_else(|| {
            format!("`{s}` is not a time: use RFC 3339 (e.g. 2024-05-01T12:00:00Z), seconds since the epoch, or `now`")
        })?;
        Ok(Timestamp { rfc3339: s.to_owned(), epoch })
    }

    pub fn from_epoch(epoch: u64) -> Self {
        let days = (epoch / 86400) as i64;
        let secs = epoch % 86400;
        let (y, m, d) = civil_from_days(days);
        let rfc3339 =
            format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60);
        Timestamp { rfc3339, epoch }
    }
}

/// Seconds since the epoch of an RFC 3339 time (`2024-05-01T12:00:00Z`,
/// fractional seconds and offsets allowed), or `None` if it is not one.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && &rest[3..4] == ":" => {
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            let o = oh * 3600 + om * 60;
            if rest.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(t).ok()
}

// Howard Hinnant's civil-calendar algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_and_epoch() {
        assert_eq!(Timestamp::parse("1970-01-01T00:00:01Z").unwrap().epoch, 1);
        assert_eq!(Timestamp::parse("2024-02-29T12:30:00Z").unwrap().epoch, 1709209800);
        assert_eq!(Timestamp::parse("2024-02-29T13:30:00+01:00").unwrap().epoch, 1709209800);
        assert_eq!(Timestamp::parse("2024-02-29T12:30:00.123Z").unwrap().epoch, 1709209800);
        assert_eq!(Timestamp::parse("1709209800").unwrap().rfc3339, "2024-02-29T12:30:00Z");
        assert!(Timestamp::parse("now").unwrap().epoch > 1_700_000_000);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "yesterday", "2024-13-01T00:00:00Z", "2024-01-01", "2024-01-01T00:00:00"] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn epoch_round_trips() {
        for e in [0u64, 1, 86399, 951782400, 4102444800] {
            let t = Timestamp::from_epoch(e);
            assert_eq!(Timestamp::parse(&t.rfc3339).unwrap().epoch, e);
        }
    }
}
