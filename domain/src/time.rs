//! Timestamps: milliseconds since the Unix epoch, shown as RFC 3339 in JSON.
//!
//! The event log stores the integer, so hashing and ordering never depend on
//! formatting; JSON carries RFC 3339 text (UTC, millisecond precision) and also
//! accepts a bare integer of milliseconds.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Earliest instant accepted from input: 0001-01-01T00:00:00Z.
pub const MIN_MILLIS: i64 = -62_135_596_800_000;
/// Latest instant accepted from input: 9999-12-31T23:59:59.999Z.
pub const MAX_MILLIS: i64 = 253_402_300_799_999;

/// A UTC instant with millisecond precision.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Self((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// Parses RFC 3339 text.
    pub fn parse_rfc3339(s: &str) -> Result<Self, time::error::Parse> {
        let t = OffsetDateTime::parse(s, &Rfc3339)?;
        Ok(Self((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    /// Formats as RFC 3339 in UTC (`2026-01-02T03:04:05.678Z`).
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => {
                let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
                format!(
                    "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                    t.hour(),
                    t.minute(),
                    t.second(),
                    t.millisecond()
                )
            }
            Err(_) => self.0.to_string(),
        }
    }
}

impl Timestamp {
    /// HL7 DTM to the second, UTC: `YYYYMMDDHHMMSS`. (The appliance writes
    /// its ACK times in the hospital's zone, with the offset: edge-node's
    /// `HospitalTime`.)
    pub fn to_hl7(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => format!(
                "{:04}{:02}{:02}{:02}{:02}{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            Err(_) => String::new(),
        }
    }

    /// Parses an HL7 DTM (`YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]`); without an
    /// offset the time is taken as UTC. `None` when malformed. (The
    /// appliance reads the feed's times in the hospital's zone instead:
    /// edge-node's `HospitalTime`.)
    pub fn parse_hl7(s: &str) -> Option<Timestamp> {
        let s = s.trim();
        let (main, offset) = match s.find(['+', '-']) {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        let digits = main.split('.').next()?;
        if !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14)
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let num = |a: usize, b: usize, d: i32| -> Option<i32> {
            digits.get(a..b).map_or(Some(d), |x| x.parse().ok())
        };
        let date = time::Date::from_calendar_date(
            num(0, 4, 1970)?,
            time::Month::try_from(u8::try_from(num(4, 6, 1)?).ok()?).ok()?,
            u8::try_from(num(6, 8, 1)?).ok()?,
        )
        .ok()?;
        let clock = time::Time::from_hms(
            u8::try_from(num(8, 10, 0)?).ok()?,
            u8::try_from(num(10, 12, 0)?).ok()?,
            u8::try_from(num(12, 14, 0)?).ok()?,
        )
        .ok()?;
        let mut t = time::PrimitiveDateTime::new(date, clock).assume_utc();
        if let Some(off) = offset {
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let hhmm = off.get(1..5)?;
            let h: i64 = hhmm.get(..2)?.parse().ok()?;
            let m: i64 = hhmm.get(2..)?.parse().ok()?;
            t -= time::Duration::minutes(sign * (h * 60 + m));
        }
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        Some(Timestamp(i64::try_from(ms).ok()?))
    }
}

/// Longest lifetime a relative expiry may give: ten years.
pub const MAX_EXPIRY_MS: i64 = 3_660 * 86_400_000;

/// RFC 3339 to the second, UTC (`2026-01-02T03:04:05Z`), for listings.
pub fn rfc3339_seconds(ms: i64) -> String {
    let t = Timestamp::from_millis(ms).to_rfc3339();
    match t.split_once('.') {
        Some((s, _)) => format!("{s}Z"),
        None => t,
    }
}

/// The state of a credential at `now_ms`: `revoked`, `expired` or `active`.
pub fn credential_status(
    revoked_ms: Option<i64>,
    expires_ms: Option<i64>,
    now_ms: i64,
) -> &'static str {
    if revoked_ms.is_some() {
        "revoked"
    } else if expires_ms.is_some_and(|e| e <= now_ms) {
        "expired"
    } else {
        "active"
    }
}

/// When a credential given `--expires TEXT` at `now` expires: `Nd` (days),
/// `Nh` (hours), `Nm` (minutes) or `Ns` (seconds) from `now`, or an RFC 3339
/// time (`2026-12-31T23:59:59Z`). The instant must be after `now` and at
/// most ten years ahead. The error says what is accepted.
pub fn parse_expiry(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    let text = text.trim();
    let usage = || {
        format!(
            "--expires {text:?} is not a lifetime: give Nd (days), Nh (hours), Nm (minutes), \
             Ns (seconds), or an RFC 3339 time such as 2026-12-31T23:59:59Z"
        )
    };
    let at = match text.char_indices().last() {
        Some((i, unit @ ('d' | 'h' | 'm' | 's')))
            if i > 0 && text[..i].bytes().all(|b| b.is_ascii_digit()) =>
        {
            let n: i64 = text[..i].parse().map_err(|_| usage())?;
            let unit_ms: i64 = match unit {
                'd' => 86_400_000,
                'h' => 3_600_000,
                'm' => 60_000,
                _ => 1_000,
            };
            let span = n
                .checked_mul(unit_ms)
                .filter(|s| *s <= MAX_EXPIRY_MS)
                .ok_or_else(|| {
                    format!("--expires {text:?} is longer than the ten years a credential may live")
                })?;
            if span == 0 {
                return Err(format!(
                    "--expires {text:?} would expire at once; give a lifetime above zero"
                ));
            }
            Timestamp(now.0 + span)
        }
        _ => Timestamp::parse_rfc3339(text).map_err(|_| usage())?,
    };
    if at <= now {
        return Err(format!("--expires {text:?} is in the past"));
    }
    if at.0 - now.0 > MAX_EXPIRY_MS {
        return Err(format!(
            "--expires {text:?} is more than the ten years a credential may live"
        ));
    }
    Ok(at)
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Millis(i64),
            Text(String),
        }
        let t = match Repr::deserialize(d)? {
            Repr::Millis(ms) => Self(ms),
            Repr::Text(s) => Self::parse_rfc3339(&s).map_err(|_| {
                serde::de::Error::custom("time must be RFC 3339, e.g. 2026-01-02T03:04:05Z")
            })?,
        };
        // Only instants that format back to RFC 3339 are accepted, so every
        // stored time round-trips.
        if !(MIN_MILLIS..=MAX_MILLIS).contains(&t.0) {
            return Err(serde::de::Error::custom(
                "time out of range (years 1 to 9999)",
            ));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hl7_times() {
        let t = Timestamp::parse_hl7("20260102030405").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-02T03:04:05.000Z");
        assert_eq!(t.to_hl7(), "20260102030405");
        assert_eq!(
            Timestamp::parse_hl7("202601020304+0100")
                .unwrap()
                .to_rfc3339(),
            "2026-01-02T02:04:00.000Z"
        );
        assert_eq!(
            Timestamp::parse_hl7("2026").unwrap().to_rfc3339(),
            "2026-01-01T00:00:00.000Z"
        );
        for bad in [
            "",
            "20261",
            "2026130101",
            "abcd",
            "20260101250000",
            "2026+x",
        ] {
            assert_eq!(Timestamp::parse_hl7(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips_rfc3339() {
        let t = Timestamp::from_millis(1_767_323_045_678);
        let s = t.to_rfc3339();
        assert_eq!(s, "2026-01-02T03:04:05.678Z");
        assert_eq!(Timestamp::parse_rfc3339(&s).unwrap(), t);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert_eq!(
            serde_json::from_str::<Timestamp>("1767323045678").unwrap(),
            t
        );
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
        // Out of the formattable range: refused, so nothing unreadable is stored.
        assert!(serde_json::from_str::<Timestamp>("9000000000000000").is_err());
        assert!(serde_json::from_str::<Timestamp>(&MAX_MILLIS.to_string()).is_ok());
        let max = Timestamp::from_millis(MAX_MILLIS);
        let json = serde_json::to_string(&max).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), max);
    }

    #[test]
    fn expiries_are_relative_lifetimes_or_rfc3339_times_in_the_future() {
        let now = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let at = |s: &str| parse_expiry(s, now).map(Timestamp::to_rfc3339);
        assert_eq!(at("90d").unwrap(), "2026-04-01T00:00:00.000Z");
        assert_eq!(at("12h").unwrap(), "2026-01-01T12:00:00.000Z");
        assert_eq!(at(" 30m ").unwrap(), "2026-01-01T00:30:00.000Z");
        assert_eq!(at("2s").unwrap(), "2026-01-01T00:00:02.000Z");
        assert_eq!(
            at("2026-06-30T12:00:00+02:00").unwrap(),
            "2026-06-30T10:00:00.000Z"
        );
        assert!(at("3660d").is_ok());
        for (bad, says) in [
            ("", "not a lifetime"),
            ("d", "not a lifetime"),
            ("-3d", "not a lifetime"),
            ("3w", "not a lifetime"),
            ("1.5h", "not a lifetime"),
            ("2026-12-31", "not a lifetime"),
            ("0h", "at once"),
            ("3661d", "ten years"),
            ("99999999999999999999d", "not a lifetime"),
            ("2025-12-31T00:00:00Z", "in the past"),
            ("2040-01-01T00:00:00Z", "ten years"),
        ] {
            let e = at(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
