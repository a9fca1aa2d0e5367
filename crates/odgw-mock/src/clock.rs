//! Open Dental's clock: office-local wall time with no offset. The public test
//! database runs in US Pacific time, so the mock does too.

use time::macros::format_description;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset, Weekday};

/// `yyyy-MM-dd HH:mm:ss`, Open Dental's DateTime format.
pub(crate) const DATETIME: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
/// `yyyy-MM-dd`, Open Dental's Date format.
pub(crate) const DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]");

/// The current US Pacific wall time, formatted as Open Dental does.
pub(crate) fn server_date_time() -> String {
    format_datetime(pacific(OffsetDateTime::now_utc()))
}

pub(crate) fn format_datetime(t: PrimitiveDateTime) -> String {
    // The format has no fallible component for in-range years.
    t.format(DATETIME).unwrap_or_default()
}

/// Parses `yyyy-MM-dd HH:mm:ss`, or a bare `yyyy-MM-dd` as its midnight.
pub(crate) fn parse_datetime(s: &str) -> Option<PrimitiveDateTime> {
    PrimitiveDateTime::parse(s, DATETIME)
        .ok()
        .or_else(|| parse_date(s).map(|d| d.midnight()))
}

pub(crate) fn parse_date(s: &str) -> Option<Date> {
    Date::parse(s, DATE).ok()
}

/// US Pacific wall time at `utc`: PDT (UTC-7) from the second Sunday of
/// March 02:00 local to the first Sunday of November 02:00 local, else PST.
pub(crate) fn pacific(utc: OffsetDateTime) -> PrimitiveDateTime {
    let utc = utc.to_offset(UtcOffset::UTC);
    let year = utc.year();
    let dst = match (
        nth_sunday(year, Month::March, 2),
        nth_sunday(year, Month::November, 1),
    ) {
        (Some(start), Some(end)) => {
            // 02:00 PST = 10:00 UTC; 02:00 PDT = 09:00 UTC.
            let start = start.with_time(Time::MIDNIGHT).assume_utc() + time::Duration::hours(10);
            let end = end.with_time(Time::MIDNIGHT).assume_utc() + time::Duration::hours(9);
            utc >= start && utc < end
        }
        _ => false,
    };
    let hours = if dst { -7 } else { -8 };
    let local = utc + time::Duration::hours(hours);
    PrimitiveDateTime::new(local.date(), local.time())
}

fn nth_sunday(year: i32, month: Month, n: u8) -> Option<Date> {
    let first = Date::from_calendar_date(year, month, 1).ok()?;
    let to_sunday = (7 - first.weekday().number_days_from_sunday()) % 7;
    let day = 1 + to_sunday + 7 * (n - 1);
    let d = Date::from_calendar_date(year, month, day).ok()?;
    debug_assert_eq!(d.weekday(), Weekday::Sunday);
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn pacific_matches_the_test_database_observation() {
        // A 17:19:41Z request returned serverDateTime 10:19:31 (PDT) on
        // 2025-10-26; the clock skew aside, the offset must be -7.
        let t = pacific(datetime!(2025-10-26 17:19:41 UTC));
        assert_eq!(format_datetime(t), "2025-10-26 10:19:41");
    }

    #[test]
    fn pacific_switches_at_the_dst_boundaries() {
        // 2025: DST from Sun 9 March 10:00Z to Sun 2 November 09:00Z.
        assert_eq!(
            format_datetime(pacific(datetime!(2025-03-09 09:59:59 UTC))),
            "2025-03-09 01:59:59"
        );
        assert_eq!(
            format_datetime(pacific(datetime!(2025-03-09 10:00:00 UTC))),
            "2025-03-09 03:00:00"
        );
        assert_eq!(
            format_datetime(pacific(datetime!(2025-11-02 08:59:59 UTC))),
            "2025-11-02 01:59:59"
        );
        assert_eq!(
            format_datetime(pacific(datetime!(2025-11-02 09:00:00 UTC))),
            "2025-11-02 01:00:00"
        );
        assert_eq!(
            format_datetime(pacific(datetime!(2026-01-15 12:00:00 UTC))),
            "2026-01-15 04:00:00"
        );
    }

    #[test]
    fn parses_both_formats() {
        assert!(parse_datetime("2025-10-26 09:19:25").is_some());
        assert_eq!(
            parse_datetime("2025-10-26"),
            parse_datetime("2025-10-26 00:00:00")
        );
        assert!(parse_datetime("2025-10-26T09:19:25").is_none());
        assert!(parse_datetime("10/26/2025").is_none());
    }
}
