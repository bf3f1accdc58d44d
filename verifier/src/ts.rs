//! The ledger timestamp: UTC with exactly six fractional digits,
//! `2026-11-21T09:30:12.345678Z`, held as microseconds since the Unix epoch.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

/// A ledger timestamp in microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// Microseconds in one day.
pub const DAY_MICROS: i64 = 86_400_000_000;

impl Timestamp {
    /// From a chrono UTC time, truncated to microseconds.
    pub fn from_datetime(t: DateTime<Utc>) -> Timestamp {
        Timestamp(t.timestamp_micros())
    }

    /// As a chrono UTC time.
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.0)
    }

    /// Parses the exact canonical form and nothing else: years 0000–9999,
    /// six fractional digits, a literal `Z`.
    pub fn parse(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() != 27 || b[26] != b'Z' || b[19] != b'.' {
            return None;
        }
        let t = chrono::NaiveDateTime::parse_from_str(&s[..26], "%Y-%m-%dT%H:%M:%S%.6f").ok()?;
        let ts = Timestamp(t.and_utc().timestamp_micros());
        (ts.to_string() == s).then_some(ts)
    }

    /// The UTC day this instant falls on.
    pub fn day(self) -> Option<NaiveDate> {
        self.to_datetime().map(|d| d.date_naive())
    }

    /// The first instant of a UTC day.
    pub fn start_of_day(day: NaiveDate) -> Timestamp {
        Timestamp(day.and_hms_opt(0, 0, 0).map_or(0, |d| d.and_utc().timestamp_micros()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(d) => write!(f, "{}", d.format("%Y-%m-%dT%H:%M:%S%.6fZ")),
            None => write!(f, "<out-of-range timestamp {}>", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_round_trip_and_strictness() {
        let s = "2026-11-21T09:30:12.345678Z";
        let t = Timestamp::parse(s).expect("canonical");
        assert_eq!(t.to_string(), s);
        assert_eq!(t.day().map(|d| d.to_string()).as_deref(), Some("2026-11-21"));
        for bad in [
            "2026-11-21T09:30:12.34567Z",
            "2026-11-21T09:30:12.3456789Z",
            "2026-11-21T09:30:12.345678+00:00",
            "2026-11-21 09:30:12.345678Z",
            "2026-02-30T09:30:12.345678Z",
            "2026-11-21T24:00:00.000000Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }
}
