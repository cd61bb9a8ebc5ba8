//! Image timestamps: RFC 3339 strings, seconds since the epoch, or `now`, as dockerTools
//! accepts them. Parsing and calendar arithmetic are the `time` crate's.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A timestamp as written into the config (`created`) and as file mtime. Only times from
/// the epoch to the end of year 9999 exist: tar mtimes are unsigned and RFC 3339 has four
/// year digits.
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
    /// (`2024-05-01T12:00:00Z`, fractional seconds and offsets allowed). An RFC 3339
    /// input is kept as written (it is what the config says).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "now" {
            return Ok(Self::from_datetime(
                OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is valid"),
            ));
        }
        if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
            let epoch: i64 = s.parse().map_err(|_| format!("`{s}` is out of range"))?;
            return Self::from_epoch(epoch as u64);
        }
        let epoch = parse_rfc3339(s).map_err(|e| {
            format!("`{s}` is not a time ({e}): use RFC 3339 (e.g. 2024-05-01T12:00:00Z), seconds since the epoch, or `now`")
        })?;
        Ok(Timestamp { rfc3339: s.to_owned(), epoch })
    }

    /// The time `epoch` seconds after 1970-01-01T00:00:00Z, in UTC.
    pub fn from_epoch(epoch: u64) -> Result<Self, String> {
        let t = i64::try_from(epoch)
            .ok()
            .and_then(|e| OffsetDateTime::from_unix_timestamp(e).ok())
            .filter(|t| t.year() <= 9999)
            .ok_or_else(|| format!("{epoch} seconds since the epoch is after the year 9999"))?;
        Ok(Self::from_datetime(t))
    }

    fn from_datetime(t: OffsetDateTime) -> Self {
        let rfc3339 = t.format(&Rfc3339).expect("a UTC time within 0..=9999 formats");
        Timestamp { rfc3339, epoch: t.unix_timestamp() as u64 }
    }
}

/// Seconds since the epoch of an RFC 3339 time (`2024-05-01T12:00:00Z`, fractional
/// seconds and offsets allowed; `2024-02-30` is refused), or why it is not one.
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| e.to_string())?;
    u64::try_from(t.unix_timestamp()).map_err(|_| "it is before 1970".to_owned())
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
        assert_eq!(Timestamp::parse("9999-12-31T23:59:59Z").unwrap().epoch, 253402300799);
        assert!(Timestamp::parse("now").unwrap().epoch > 1_700_000_000);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "1969-12-31T23:59:59Z",
            "253402300800",
            "99999999999999999999999",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn epoch_round_trips() {
        for e in [0u64, 1, 86399, 951782400, 4102444800, 253402300799] {
            let t = Timestamp::from_epoch(e).unwrap();
            assert_eq!(Timestamp::parse(&t.rfc3339).unwrap().epoch, e);
        }
    }
}
