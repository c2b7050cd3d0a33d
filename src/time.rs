//! Time helpers: Kazoo stores document times as gregorian seconds (seconds since year 0).

use chrono::{SecondsFormat, Utc};

/// Seconds between 0000-01-01 and 1970-01-01 (Erlang's `calendar` epoch offset).
pub const GREGORIAN_UNIX_OFFSET: i64 = 62_167_219_200;

/// Now, in gregorian seconds.
pub fn now_gregorian() -> i64 {
    Utc::now().timestamp() + GREGORIAN_UNIX_OFFSET
}

/// Now, in unix milliseconds.
pub fn now_unix_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    now_unix_ms() / 1000
}

/// Gregorian seconds to unix seconds.
pub fn gregorian_to_unix(secs: i64) -> i64 {
    secs - GREGORIAN_UNIX_OFFSET
}

/// Unix seconds to gregorian seconds.
pub fn unix_to_gregorian(secs: i64) -> i64 {
    secs + GREGORIAN_UNIX_OFFSET
}

/// UTC ISO-8601 `YYYY-MM-DDTHH:MM:SSZ`, as the response envelope's `timestamp`.
pub fn iso8601_now() -> String {
    // Formatted once a second per thread: every API response carries it.
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const {
            std::cell::RefCell::new((i64::MIN, String::new()))
        };
    }
    let now = Utc::now();
    LAST.with_borrow_mut(|(secs, text)| {
        if *secs != now.timestamp() {
            *secs = now.timestamp();
            *text = now.to_rfc3339_opts(SecondsFormat::Secs, true);
        }
        text.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gregorian_offset_matches_erlang() {
        // calendar:datetime_to_gregorian_seconds({{1970,1,1},{0,0,0}}) = 62167219200
        assert_eq!(gregorian_to_unix(GREGORIAN_UNIX_OFFSET), 0);
        assert!(now_gregorian() > 63_900_000_000);
        assert!(iso8601_now().ends_with('Z'));
    }
}
