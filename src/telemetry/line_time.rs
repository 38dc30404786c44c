//! The time at the head of each log line, `2026-12-03T14:32:10.123456Z` (UTC, microseconds), as
//! tracing-subscriber's own clock writes it. Its clock works out the calendar date and formats
//! seven numbers for every line: a profile of the default level put 1.5 % of a small request's
//! CPU there. Lines within one second share everything up to the fraction, so each thread keeps
//! that prefix and writes only the microseconds.

use std::cell::RefCell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The wall clock of the log lines.
pub struct LineTime;

/// One thread's last second and its text up to the `.`: `2026-12-03T14:32:10`.
struct Second {
    at: i64,
    text: String,
}

thread_local! {
    static LAST: RefCell<Option<Second>> = const { RefCell::new(None) };
}

impl FormatTime for LineTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let (seconds, micros) = since_epoch(SystemTime::now());
        let cached = LAST.try_with(|last| {
            let mut last = last.borrow_mut();
            let second = match &mut *last {
                Some(second) if second.at == seconds => second,
                other => other.insert(Second { at: seconds, text: calendar(seconds) }),
            };
            w.write_str(&second.text)
        });
        match cached {
            Ok(written) => written?,
            // A line logged while this thread's locals are being dropped: no cache to use.
            Err(_) => w.write_str(&calendar(seconds))?,
        }
        w.write_str(std::str::from_utf8(&fraction(micros)).unwrap_or(".000000Z"))
    }
}

/// Whole seconds since 1970 (negative before it) and the microseconds into that second.
fn since_epoch(now: SystemTime) -> (i64, u32) {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_micros()),
        // A clock set before 1970: count back, the fraction still runs forward.
        Err(e) => {
            let back = e.duration();
            let seconds = -i64::try_from(back.as_secs()).unwrap_or(i64::MAX);
            match back.subsec_nanos() {
                0 => (seconds, 0),
                // Rounded down, in nanoseconds first, as tracing-subscriber's clock does.
                n => (seconds - 1, (1_000_000_000 - n) / 1000),
            }
        }
    }
}

/// `.123456Z`, on the stack.
fn fraction(micros: u32) -> [u8; 8] {
    let mut text = *b".000000Z";
    let mut rest = micros.min(999_999);
    for d in text[1..7].iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    text
}

/// `YYYY-MM-DDTHH:MM:SS` for a second since 1970, in the proleptic Gregorian calendar.
fn calendar(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let year = if year > 9999 {
        format!("+{year}")
    } else if year < 0 {
        format!("{year:05}")
    } else {
        format!("{year:04}")
    };
    format!("{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}", of_day / 3600, of_day % 3600 / 60, of_day % 60)
}

/// Year, month and day of a count of days since 1970-01-01: Howard Hinnant's `civil_from_days`
/// (eras of 400 years, years counted from March so the leap day comes last).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let of_era = z.rem_euclid(146_097);
    let year_of_era = (of_era - of_era / 1460 + of_era / 36_524 - of_era / 146_096) / 365;
    let day_of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn text(now: SystemTime) -> String {
        let (seconds, micros) = since_epoch(now);
        format!("{}{}", calendar(seconds), std::str::from_utf8(&fraction(micros)).unwrap())
    }

    fn at(seconds: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros)
    }

    #[test]
    fn known_instants() {
        assert_eq!(text(at(0, 0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(text(at(1_796_225_530, 123_456)), "2026-12-02T15:32:10.123456Z");
        // Leap days, the century that is not a leap year and the one that is.
        assert_eq!(text(at(951_782_400, 7)), "2000-02-29T00:00:00.000007Z");
        assert_eq!(text(at(4_107_542_399, 999_999)), "2100-02-28T23:59:59.999999Z");
        assert_eq!(text(at(4_107_542_400, 0)), "2100-03-01T00:00:00.000000Z");
        assert_eq!(text(at(253_402_300_799, 0)), "9999-12-31T23:59:59.000000Z");
        assert_eq!(text(at(253_402_300_800, 0)), "+10000-01-01T00:00:00.000000Z");
        assert_eq!(text(UNIX_EPOCH - Duration::from_micros(1)), "1969-12-31T23:59:59.999999Z");
        // Before 1970 the fraction is rounded down from nanoseconds (found by a reviewer).
        assert_eq!(text(UNIX_EPOCH - Duration::from_nanos(500)), "1969-12-31T23:59:59.999999Z");
        assert_eq!(text(UNIX_EPOCH - Duration::from_nanos(1500)), "1969-12-31T23:59:59.999998Z");
        assert_eq!(text(UNIX_EPOCH - Duration::from_nanos(999_999_999)), "1969-12-31T23:59:59.000000Z");
    }

    #[test]
    fn each_day_of_four_centuries_follows_the_one_before() {
        // Walks 1900-01-01 .. 2300-01-01 a day at a time, counting the calendar by hand.
        let mut expected = (1900i64, 1u32, 1u32);
        let first = civil_days(1900);
        for days in first..civil_days(2300) {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            let length = match m {
                2 if is_leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            expected = if d < length {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    /// The Gregorian rule, written out for the tests to count with.
    fn is_leap(year: i64) -> bool {
        (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
    }

    /// Days from 1970-01-01 to January 1st of `year`, counted year by year.
    fn civil_days(year: i64) -> i64 {
        let length = |y: i64| if is_leap(y) { 366 } else { 365 };
        if year >= 1970 {
            (1970..year).map(length).sum()
        } else {
            -(year..1970).map(length).sum::<i64>()
        }
    }

    #[test]
    fn the_same_text_as_tracing_subscribers_clock() {
        let mut ours = String::new();
        let mut theirs = String::new();
        // Retried when the second turns between the two readings.
        for _ in 0..3 {
            ours.clear();
            theirs.clear();
            LineTime.format_time(&mut Writer::new(&mut ours)).unwrap();
            tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut theirs)).unwrap();
            if ours[..19] == theirs[..19] {
                break;
            }
        }
        assert_eq!(ours.len(), theirs.len(), "{ours} / {theirs}");
        assert_eq!(ours[..19], theirs[..19], "{ours} / {theirs}");
        assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
    }
}
