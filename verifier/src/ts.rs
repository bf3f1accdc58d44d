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
        // Fixed positions: `YYYY-MM-DDTHH:MM:SS.ffffffZ`. Every field has a
        // fixed width, so a string of this shape with a valid date and time
        // is the canonical form of its instant (no leap second: SS < 60).
        let b = s.as_bytes();
        if b.len() != 27 {
            return None;
        }
        for (i, &c) in b.iter().enumerate() {
            let ok = match i {
                4 | 7 => c == b'-',
                10 => c == b'T',
                13 | 16 => c == b':',
                19 => c == b'.',
                26 => c == b'Z',
                _ => c.is_ascii_digit(),
            };
            if !ok {
                return None;
            }
        }
        let num = |from: usize, to: usize| b[from..to].iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0'));
        let (hour, minute, second) = (num(11, 13), num(14, 16), num(17, 19));
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let date = NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)).ok()?, num(5, 7), num(8, 10))?;
        let t = date.and_hms_micro_opt(hour, minute, second, num(20, 26))?;
        Some(Timestamp(t.and_utc().timestamp_micros()))
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
        use chrono::{Datelike as _, Timelike as _};
        match self.to_datetime() {
            // The canonical form, written field by field (chrono's format
            // strings cost more than the rest of a leaf's checks).
            Some(d) if (0..=9999).contains(&d.year()) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                d.year(),
                d.month(),
                d.day(),
                d.hour(),
                d.minute(),
                d.second(),
                d.timestamp_subsec_micros()
            ),
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

    /// The chrono reference: parse with a format string, then require the
    /// canonical rendering to give the input back.
    fn reference_parse(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() != 27 || b[26] != b'Z' || b[19] != b'.' {
            return None;
        }
        let t = chrono::NaiveDateTime::parse_from_str(&s[..26], "%Y-%m-%dT%H:%M:%S%.6f").ok()?;
        let ts = Timestamp(t.and_utc().timestamp_micros());
        let canon = ts.to_datetime()?.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        (canon == s).then_some(ts)
    }

    /// The fixed-position parser and writer agree with chrono's format
    /// strings on valid instants and on every single-byte change of them.
    #[test]
    fn fast_parse_and_display_agree_with_chrono() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let span = 253_402_300_800_000_000_i64; // 0000-01-01 .. 9999-12-31, in µs from 1970
        let year0 = -62_167_219_200_000_000_i64;
        for _ in 0..20_000 {
            let t = Timestamp(year0 + (next() % span as u64) as i64);
            let s = t.to_string();
            let chrono_s = t.to_datetime().expect("in range").format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
            assert_eq!(s, chrono_s);
            assert_eq!(Timestamp::parse(&s), Some(t), "{s}");
            let mut b = s.clone().into_bytes();
            let i = (next() % 27) as usize;
            b[i] = b"0123456789-:.TZ+ 6"[(next() % 18) as usize];
            if let Ok(m) = String::from_utf8(b) {
                assert_eq!(Timestamp::parse(&m), reference_parse(&m), "{m}");
            }
        }
        for s in [
            "2024-02-29T23:59:59.999999Z",
            "2023-02-29T00:00:00.000000Z",
            "0000-01-01T00:00:00.000000Z",
            "9999-12-31T23:59:60.000000Z",
            "1970-01-01T00:00:00.000000Z",
        ] {
            assert_eq!(Timestamp::parse(s), reference_parse(s), "{s}");
        }
    }
}
