//! Time zones of faxes: which zone applies (a chain of levels where `"inherit"` or nothing
//! defers to the next, as Kazoo resolves `fax_timezone` and `timezone`) and local date-times
//! in an IANA zone, from the tz database built into the binary.

use chrono::TimeZone;
use chrono_tz::Tz;

/// The zone when no level names one: the accounts schema's default `timezone`.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// Whether a level names a zone of its own (not empty, not `"inherit"`).
pub fn is_set(level: Option<&str>) -> bool {
    level.is_some_and(|z| !z.trim().is_empty() && z != "inherit")
}

/// The first level that names a zone, else [`DEFAULT_TIMEZONE`].
pub fn pick<'a>(levels: impl IntoIterator<Item = Option<&'a str>>) -> &'a str {
    levels
        .into_iter()
        .find(|l| is_set(*l))
        .flatten()
        .unwrap_or(DEFAULT_TIMEZONE)
}

/// The IANA zone of a name (`Europe/Paris`, `UTC`), if the tz database knows it.
pub fn parse(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

/// A gregorian time as `YYYY-MM-DD_HH-MM-SS` in `zone` (UTC when the zone is unknown, as
/// Kazoo falls back), for download file names.
pub fn file_stamp(created_gregorian: i64, zone: &str) -> String {
    let unix = crate::time::gregorian_to_unix(created_gregorian);
    let Some(utc) = chrono::DateTime::from_timestamp(unix, 0) else {
        return "unknown".into();
    };
    let fmt = "%Y-%m-%d_%H-%M-%S";
    match parse(zone) {
        Some(tz) => tz
            .from_utc_datetime(&utc.naive_utc())
            .format(fmt)
            .to_string(),
        None => utc.format(fmt).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherit_and_nothing_defer_to_the_next_level() {
        assert_eq!(
            pick([Some("inherit"), None, Some("Europe/Paris")]),
            "Europe/Paris"
        );
        assert_eq!(
            pick([Some("Asia/Tokyo"), Some("Europe/Paris")]),
            "Asia/Tokyo"
        );
        assert_eq!(pick([Some(""), Some("inherit")]), DEFAULT_TIMEZONE);
        assert_eq!(pick([]), DEFAULT_TIMEZONE);
    }

    #[test]
    fn stamps_are_local_time_with_daylight_saving() {
        // 2024-07-01 12:00:00 UTC and 2024-01-15 12:00:00 UTC.
        let summer = crate::time::unix_to_gregorian(1_719_835_200);
        let winter = crate::time::unix_to_gregorian(1_705_320_000);
        assert_eq!(file_stamp(summer, "UTC"), "2024-07-01_12-00-00");
        assert_eq!(file_stamp(summer, "Europe/Paris"), "2024-07-01_14-00-00");
        assert_eq!(file_stamp(winter, "Europe/Paris"), "2024-01-15_13-00-00");
        assert_eq!(
            file_stamp(summer, "America/Los_Angeles"),
            "2024-07-01_05-00-00"
        );
        assert_eq!(file_stamp(winter, "Asia/Kolkata"), "2024-01-15_17-30-00");
        // An unknown zone reads as UTC.
        assert_eq!(file_stamp(summer, "Mars/Olympus"), "2024-07-01_12-00-00");
    }

    #[test]
    fn zone_names_are_checked() {
        assert!(parse("America/New_York").is_some());
        assert!(parse("Mars/Olympus").is_none());
    }
}
