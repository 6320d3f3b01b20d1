//! HL7 times in the hospital's time zone (`node.timezone`), sans IO.
//!
//! An HL7 DTM without an offset is the sender's local time; the appliance
//! takes it as local time in the hospital's configured zone. A DTM with an
//! offset means exactly that offset, whatever the zone. Times the appliance
//! writes (ACK MSH-7) carry the zone's offset at that instant, so a receiver
//! never has to guess.
//!
//! Local times that do not name exactly one instant are resolved with jiff's
//! [`Disambiguation::Compatible`](jiff::tz::Disambiguation::Compatible) rule
//! (RFC 5545, Temporal's default):
//!
//! - in the repeated hour when clocks go back (a *fold*, e.g. 02:30 on
//!   2026-10-25 in Europe/Warsaw), the earlier instant, still in summer time
//!   (`+0200`);
//! - in the skipped hour when clocks go forward (a *gap*, e.g. 02:30 on
//!   2026-03-29 in Europe/Warsaw), the offset from before the gap (`+0100`),
//!   which reads as 03:30 summer time: the local time moves forward by the
//!   length of the gap.
//!
//! Hours and weekdays of an instant ([`HospitalTime::hour`],
//! [`HospitalTime::weekday`]) are local too: the forecasts' history and
//! features follow the hospital's clock, not UTC.

use hms_domain::Timestamp;
use hms_domain::time::{MAX_MILLIS, MIN_MILLIS};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

/// One hour, in milliseconds.
const HOUR_MS: i64 = 3_600_000;

/// The hospital's clock: reads and writes HL7 times and tells the local hour
/// and weekday of an instant, in one time zone. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HospitalTime {
    tz: TimeZone,
}

impl Default for HospitalTime {
    /// UTC.
    fn default() -> Self {
        Self::utc()
    }
}

impl HospitalTime {
    /// The clock of time zone `tz` (from the configuration's `node.timezone`).
    pub fn new(tz: TimeZone) -> Self {
        Self { tz }
    }

    /// The clock of UTC (no offset, no daylight saving time).
    pub fn utc() -> Self {
        Self { tz: TimeZone::UTC }
    }

    /// The time zone.
    pub fn zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The zone's IANA name (`Europe/Warsaw`, `UTC`).
    pub fn name(&self) -> &str {
        self.tz.iana_name().unwrap_or("UTC")
    }

    /// Reads an HL7 DTM, `YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]`.
    ///
    /// With an offset, the time is at exactly that offset; without one, it
    /// is local time in this zone, resolved as the [module](self) describes.
    /// Missing parts default to the start of the period (`2026` is midnight,
    /// January 1); a fraction (after the seconds only) is kept to the
    /// millisecond. `None` when malformed, when a part is out of range or
    /// when the instant is outside years 1 to 9999.
    pub fn parse(&self, dtm: &str) -> Option<Timestamp> {
        let s = dtm.trim();
        let (main, offset) = match s.find(['+', '-']) {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        let (digits, fraction) = match main.split_once('.') {
            Some((d, f)) => (d, Some(f)),
            None => (main, None),
        };
        if !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14) || !all_digits(digits) {
            return None;
        }
        let millis = match fraction {
            None => 0,
            // A fraction only after the seconds, and at least one digit.
            Some(f) if digits.len() == 14 && !f.is_empty() && all_digits(f) => {
                // "5" is 500 ms, "123456" is 123 ms (the rest is dropped).
                let ms: String = f.chars().chain("00".chars()).take(3).collect();
                ms.parse::<i32>().ok()?
            }
            Some(_) => return None,
        };
        let part = |a: usize, b: usize, default: i16| -> Option<i16> {
            digits.get(a..b).map_or(Some(default), |x| x.parse().ok())
        };
        let small = |v: i16| i8::try_from(v).ok();
        let dt = DateTime::new(
            part(0, 4, 1970)?,
            small(part(4, 6, 1)?)?,
            small(part(6, 8, 1)?)?,
            small(part(8, 10, 0)?)?,
            small(part(10, 12, 0)?)?,
            small(part(12, 14, 0)?)?,
            millis * 1_000_000,
        )
        .ok()?;
        let instant = match offset {
            Some(off) => {
                let sign = match off.as_bytes().first() {
                    Some(b'-') => -1,
                    _ => 1,
                };
                let hhmm = off.get(1..)?;
                if hhmm.len() != 4 || !all_digits(hhmm) {
                    return None;
                }
                let h: i32 = hhmm[..2].parse().ok()?;
                let m: i32 = hhmm[2..].parse().ok()?;
                if h > 23 || m > 59 {
                    return None;
                }
                let offset = jiff::tz::Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()?;
                offset.to_timestamp(dt).ok()?
            }
            None => self.tz.to_ambiguous_timestamp(dt).compatible().ok()?,
        };
        let ms = instant.as_millisecond();
        (MIN_MILLIS..=MAX_MILLIS)
            .contains(&ms)
            .then(|| Timestamp::from_millis(ms))
    }

    /// Writes `t` as an HL7 DTM to the second with this zone's offset at
    /// that instant: `YYYYMMDDHHMMSS+HHMM` (or `-HHMM`), e.g.
    /// `20260701120000+0200`. Empty for an instant outside years 1 to 9999.
    pub fn format(&self, t: Timestamp) -> String {
        let Some(ts) = self.instant(t) else {
            return String::new();
        };
        let dt = self.tz.to_datetime(ts);
        let offset = self.tz.to_offset(ts).seconds();
        let sign = if offset < 0 { '-' } else { '+' };
        let minutes = offset.unsigned_abs() / 60;
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}{sign}{:02}{:02}",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            minutes / 60,
            minutes % 60
        )
    }

    /// The local wall-clock time of `t` to the minute, `HH:MM` (what the
    /// pages show). Empty for an instant outside years 1 to 9999.
    pub fn clock_time(&self, t: Timestamp) -> String {
        let Some(ts) = self.instant(t) else {
            return String::new();
        };
        let dt = self.tz.to_datetime(ts);
        format!("{:02}:{:02}", dt.hour(), dt.minute())
    }

    /// [`HospitalTime::clock_time`] to the second, `HH:MM:SS`.
    pub fn clock_time_seconds(&self, t: Timestamp) -> String {
        let Some(ts) = self.instant(t) else {
            return String::new();
        };
        let dt = self.tz.to_datetime(ts);
        format!("{:02}:{:02}:{:02}", dt.hour(), dt.minute(), dt.second())
    }

    /// The local hour of `t`, 0 to 23.
    pub fn hour(&self, t: Timestamp) -> u8 {
        self.slot(t).1
    }

    /// The local weekday of `t`, 0 = Monday to 6 = Sunday.
    pub fn weekday(&self, t: Timestamp) -> u8 {
        self.slot(t).0
    }

    /// The local weekday (0 = Monday) and hour (0 to 23) of `t`.
    pub fn slot(&self, t: Timestamp) -> (u8, u8) {
        match self.instant(t) {
            Some(ts) => {
                let dt = self.tz.to_datetime(ts);
                let weekday = dt.weekday().to_monday_zero_offset();
                (weekday.unsigned_abs(), dt.hour().unsigned_abs())
            }
            // Outside jiff's range (never a stored time): UTC arithmetic.
            None => {
                let ms = t.as_millis();
                let days = ms.div_euclid(24 * HOUR_MS);
                // 1970-01-01 was a Thursday (3 when Monday is 0).
                let weekday = (days + 3).rem_euclid(7) as u8;
                (weekday, (ms.rem_euclid(24 * HOUR_MS) / HOUR_MS) as u8)
            }
        }
    }

    /// The start of the local hour holding `t`: `t` less the minutes,
    /// seconds and milliseconds the local clock shows. With whole-hour
    /// offsets it is the UTC hour; in a zone at `+0530` it is half past.
    pub fn start_of_hour(&self, t: Timestamp) -> Timestamp {
        let ms = t.as_millis();
        let offset_ms = self
            .instant(t)
            .map_or(0, |ts| i64::from(self.tz.to_offset(ts).seconds()) * 1000);
        Timestamp::from_millis(ms - (ms + offset_ms).rem_euclid(HOUR_MS))
    }

    /// The local calendar date of `t`, `YYYY-MM-DD`. Empty for an instant
    /// outside years 1 to 9999.
    pub fn date(&self, t: Timestamp) -> String {
        let Some(ts) = self.instant(t) else {
            return String::new();
        };
        let d = self.tz.to_datetime(ts).date();
        format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
    }

    /// The local day `date` (`YYYY-MM-DD`) as the instants `[start, end)`:
    /// its first moment and the next day's (23 or 25 hours apart on the
    /// days the clocks change). `None` when `date` is not such a date.
    pub fn day(&self, date: &str) -> Option<(Timestamp, Timestamp)> {
        let b = date.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i16> {
            let part = date.get(r)?;
            all_digits(part).then(|| part.parse().ok()).flatten()
        };
        let d = jiff::civil::Date::new(
            num(0..4)?,
            i8::try_from(num(5..7)?).ok()?,
            i8::try_from(num(8..10)?).ok()?,
        )
        .ok()?;
        let start = |d: jiff::civil::Date| -> Option<Timestamp> {
            let ms = self
                .tz
                .to_ambiguous_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
                .compatible()
                .ok()?
                .as_millisecond();
            (MIN_MILLIS..=MAX_MILLIS)
                .contains(&ms)
                .then(|| Timestamp::from_millis(ms))
        };
        Some((start(d)?, start(d.tomorrow().ok()?)?))
    }

    fn instant(&self, t: Timestamp) -> Option<jiff::Timestamp> {
        jiff::Timestamp::from_millisecond(t.as_millis()).ok()
    }
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(name: &str) -> HospitalTime {
        HospitalTime::new(TimeZone::get(name).expect("zone"))
    }

    fn at(rfc3339: &str) -> Timestamp {
        Timestamp::parse_rfc3339(rfc3339).expect("rfc 3339")
    }

    /// Parses `dtm` and shows the UTC instant, or `None`.
    fn read(c: &HospitalTime, dtm: &str) -> String {
        c.parse(dtm)
            .map_or_else(|| "None".to_owned(), |t| t.to_rfc3339())
    }

    #[test]
    fn local_times_are_read_in_the_hospitals_zone() {
        let waw = clock("Europe/Warsaw");
        // Winter: +01:00; summer: +02:00.
        assert_eq!(read(&waw, "20260115083000"), "2026-01-15T07:30:00.000Z");
        assert_eq!(read(&waw, "20260715083000"), "2026-07-15T06:30:00.000Z");
        // Shorter forms start the period, in local time.
        assert_eq!(read(&waw, "2026"), "2025-12-31T23:00:00.000Z");
        assert_eq!(read(&waw, "202607151230"), "2026-07-15T10:30:00.000Z");
        // A fraction is kept to the millisecond.
        assert_eq!(read(&waw, "20260115083000.5"), "2026-01-15T07:30:00.500Z");
        assert_eq!(
            read(&waw, "20260115083000.123456"),
            "2026-01-15T07:30:00.123Z"
        );
        let ny = clock("America/New_York");
        assert_eq!(read(&ny, "20260115083000"), "2026-01-15T13:30:00.000Z");
        assert_eq!(read(&ny, "20260715083000"), "2026-07-15T12:30:00.000Z");
    }

    #[test]
    fn a_local_day_is_its_midnights_and_23_or_25_hours_when_the_clocks_change() {
        let c = clock("Europe/Warsaw");
        let hours = |d: &str| {
            let (a, b) = c.day(d).unwrap();
            (b.as_millis() - a.as_millis()) / HOUR_MS
        };
        let (start, _) = c.day("2026-07-01").unwrap();
        assert_eq!(start, at("2026-06-30T22:00:00Z"));
        assert_eq!(hours("2026-07-01"), 24);
        assert_eq!(hours("2026-03-29"), 23);
        assert_eq!(hours("2026-10-25"), 25);
        assert_eq!(c.date(at("2026-06-30T22:30:00Z")), "2026-07-01");
        assert_eq!(c.date(at("2026-06-30T21:30:00Z")), "2026-06-30");
        for bad in [
            "2026-02-30",
            "2026-7-01",
            "20260701",
            "2026-07-01x",
            "",
            "２026-07-01",
        ] {
            assert_eq!(c.day(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_explicit_offset_wins_over_the_zone() {
        let waw = clock("Europe/Warsaw");
        assert_eq!(
            read(&waw, "20260715083000+0000"),
            "2026-07-15T08:30:00.000Z"
        );
        assert_eq!(
            read(&waw, "20260715083000-0500"),
            "2026-07-15T13:30:00.000Z"
        );
        assert_eq!(read(&waw, "202601020304+0100"), "2026-01-02T02:04:00.000Z");
        assert_eq!(
            read(&waw, "20260115083000.25+0530"),
            "2026-01-15T03:00:00.250Z"
        );
        // In the skipped hour, an explicit offset is taken as written.
        assert_eq!(
            read(&waw, "20260329023000+0100"),
            "2026-03-29T01:30:00.000Z"
        );
    }

    #[test]
    fn the_repeated_hour_in_autumn_is_its_first_pass() {
        // Europe/Warsaw, 2026-10-25: 03:00 CEST becomes 02:00 CET, so
        // 02:00–02:59 happens twice (00:00–00:59Z, then 01:00–01:59Z).
        let waw = clock("Europe/Warsaw");
        assert_eq!(read(&waw, "20261025023000"), "2026-10-25T00:30:00.000Z");
        assert_eq!(read(&waw, "20261025015959"), "2026-10-24T23:59:59.000Z");
        assert_eq!(read(&waw, "20261025030000"), "2026-10-25T02:00:00.000Z");
        // The second pass is reachable with its offset.
        assert_eq!(
            read(&waw, "20261025023000+0100"),
            "2026-10-25T01:30:00.000Z"
        );
        // America/New_York, 2026-11-01: 01:00–01:59 happens twice.
        let ny = clock("America/New_York");
        assert_eq!(read(&ny, "20261101013000"), "2026-11-01T05:30:00.000Z");
    }

    #[test]
    fn the_skipped_hour_in_spring_moves_forward() {
        // Europe/Warsaw, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30
        // never shows on a clock and is read with the offset before the
        // gap (+01:00), i.e. 03:30 CEST.
        let waw = clock("Europe/Warsaw");
        assert_eq!(read(&waw, "20260329023000"), "2026-03-29T01:30:00.000Z");
        assert_eq!(
            read(&waw, "20260329023000"),
            read(&waw, "20260329033000"),
            "02:30 in the gap is 03:30 summer time"
        );
        assert_eq!(read(&waw, "20260329015959"), "2026-03-29T00:59:59.000Z");
        assert_eq!(read(&waw, "20260329030000"), "2026-03-29T01:00:00.000Z");
        // America/New_York, 2026-03-08: 02:00–02:59 is skipped.
        let ny = clock("America/New_York");
        assert_eq!(read(&ny, "20260308023000"), "2026-03-08T07:30:00.000Z");
    }

    #[test]
    fn utc_reads_local_times_as_utc() {
        let utc = HospitalTime::utc();
        assert_eq!(utc, clock("UTC"));
        assert_eq!(utc.name(), "UTC");
        for dtm in [
            "20260329023000",
            "20261025023000",
            "2026",
            "202601020304+0100",
        ] {
            assert_eq!(
                utc.parse(dtm),
                Timestamp::parse_hl7(dtm),
                "{dtm}: the same as hms_domain's reader"
            );
        }
        assert_eq!(
            utc.format(at("2026-03-29T01:30:00Z")),
            "20260329013000+0000"
        );
    }

    #[test]
    fn malformed_times_are_none() {
        let waw = clock("Europe/Warsaw");
        for bad in [
            "",
            " ",
            "20261",
            "2026130101",
            "abcd",
            "20260101250000",
            "20260230",
            "2026+x",
            "2026010203+01",
            "2026010203+01000",
            "2026010203+2400",
            "2026010203+0160",
            "202601020304.5",
            "20260102030405.",
            "20260102030405.x",
            "2026-01-02",
            "00000101000000+0000",
            "20260102030405 +0100",
        ] {
            assert_eq!(waw.parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_carry_the_offset_of_the_instant() {
        let waw = clock("Europe/Warsaw");
        assert_eq!(
            waw.format(at("2026-01-15T07:30:00.999Z")),
            "20260115083000+0100"
        );
        assert_eq!(
            waw.format(at("2026-07-15T06:30:00Z")),
            "20260715083000+0200"
        );
        // Both passes of the repeated hour, told apart by their offsets.
        assert_eq!(
            waw.format(at("2026-10-25T00:30:00Z")),
            "20261025023000+0200"
        );
        assert_eq!(
            waw.format(at("2026-10-25T01:30:00Z")),
            "20261025023000+0100"
        );
        let ny = clock("America/New_York");
        assert_eq!(ny.format(at("2026-01-15T13:30:00Z")), "20260115083000-0500");
        let kolkata = clock("Asia/Kolkata");
        assert_eq!(
            kolkata.format(at("2026-01-15T03:00:00Z")),
            "20260115083000+0530"
        );
        // What is written reads back as the same instant.
        for t in [
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:30:00Z",
            "2026-03-29T01:30:00Z",
        ] {
            assert_eq!(waw.parse(&waw.format(at(t))), Some(at(t)), "{t}");
        }
    }

    #[test]
    fn hours_and_weekdays_are_local() {
        let waw = clock("Europe/Warsaw");
        // 2026-11-23 was a Monday; 23:30Z that Sunday evening is Monday
        // 00:30 in Warsaw.
        let t = at("2026-11-22T23:30:00Z");
        assert_eq!(HospitalTime::utc().slot(t), (6, 23));
        assert_eq!(waw.slot(t), (0, 0));
        assert_eq!((waw.weekday(t), waw.hour(t)), (0, 0));
        let ny = clock("America/New_York");
        assert_eq!(ny.slot(t), (6, 18));
        // In summer the offset follows: 06:30Z is 08:30 in Warsaw.
        assert_eq!(waw.hour(at("2026-07-15T06:30:00Z")), 8);
    }

    #[test]
    fn the_start_of_the_hour_is_local() {
        let waw = clock("Europe/Warsaw");
        assert_eq!(
            waw.start_of_hour(at("2026-07-15T06:30:10.5Z")),
            at("2026-07-15T06:00:00Z")
        );
        let kolkata = clock("Asia/Kolkata");
        assert_eq!(
            kolkata.start_of_hour(at("2026-07-15T06:10:00Z")),
            at("2026-07-15T05:30:00Z")
        );
        // Both passes of the repeated hour are hours of their own.
        assert_eq!(
            waw.start_of_hour(at("2026-10-25T01:10:00Z")),
            at("2026-10-25T01:00:00Z")
        );
        assert_eq!(
            waw.start_of_hour(at("2026-10-25T00:10:00Z")),
            at("2026-10-25T00:00:00Z")
        );
    }
}
