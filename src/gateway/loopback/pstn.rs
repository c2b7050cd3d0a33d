//! The virtual PSTN's routing, pure: which far end a dialled number reaches (the `[loopback]
//! numbers` rules of the node config), and what each unanswered outcome reports.

use crate::config::{LineBehaviour, NumberRule};

/// Where a dialled number leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// A number served by this system: the call becomes an inbound fax.
    Local,
    /// The far end rejects the call with this outcome before answering.
    Unanswered(Unanswered),
    /// The far end rings until the call's ring timeout.
    NoAnswer,
    /// A simulated fax machine answers.
    Machine(Machine),
}

/// What an answering simulated far end does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// Receives the whole fax.
    Receive,
    /// Receives this many pages, then hangs up.
    HangupAfterPages(u32),
    /// Answers but stays silent (no CED, no DIS).
    Silent,
}

/// A call that ends before answer: hangup cause and SIP code, as FreeSWITCH reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unanswered {
    pub cause: &'static str,
    pub sip_code: u16,
}

/// `USER_BUSY` / 486 Busy Here.
pub const BUSY: Unanswered = Unanswered {
    cause: "USER_BUSY",
    sip_code: 486,
};
/// `NO_ANSWER` / 480 Temporarily Unavailable (what FreeSWITCH maps NO_ANSWER to).
pub const NO_ANSWER: Unanswered = Unanswered {
    cause: "NO_ANSWER",
    sip_code: 480,
};
/// The caller gave up while it was ringing: `ORIGINATOR_CANCEL` / 487.
pub const CANCELLED: Unanswered = Unanswered {
    cause: "ORIGINATOR_CANCEL",
    sip_code: 487,
};
/// A local number whose inbound side is gone: `DESTINATION_OUT_OF_ORDER` / 502.
pub const OUT_OF_ORDER: Unanswered = Unanswered {
    cause: "DESTINATION_OUT_OF_ORDER",
    sip_code: 502,
};

/// Whether `number` matches `pattern` (`x`/`X` = any digit, other characters literal, same
/// length).
pub fn matches(pattern: &str, number: &str) -> bool {
    pattern.len() == number.len()
        && pattern.bytes().zip(number.bytes()).all(|(p, n)| match p {
            b'x' | b'X' => n.is_ascii_digit(),
            _ => p == n,
        })
}

/// The route of a number that is not local: the first matching rule, else a fax machine.
pub fn route(rules: &[NumberRule], number: &str) -> Route {
    let Some(rule) = rules.iter().find(|r| matches(&r.pattern, number)) else {
        return Route::Machine(Machine::Receive);
    };
    match rule.behaviour {
        LineBehaviour::Answer => Route::Machine(Machine::Receive),
        LineBehaviour::Busy => Route::Unanswered(BUSY),
        LineBehaviour::NoAnswer => Route::NoAnswer,
        LineBehaviour::HangupAfterPages => Route::Machine(Machine::HangupAfterPages(rule.pages)),
        LineBehaviour::NoFaxTones => Route::Machine(Machine::Silent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoopbackSection;

    #[test]
    fn patterns() {
        assert!(matches("+15550001xxx", "+15550001234"));
        assert!(!matches("+15550001xxx", "+1555000123"));
        assert!(!matches("+15550001xxx", "+15550002123"));
        assert!(!matches("+15550001xxx", "+1555000123a"));
        assert!(matches("+15550001XXX", "+15550001000"));
    }

    #[test]
    fn default_numbers() {
        let rules = LoopbackSection::default().numbers;
        assert_eq!(route(&rules, "+15550001999"), Route::Unanswered(BUSY));
        assert_eq!(route(&rules, "+15550002000"), Route::NoAnswer);
        assert_eq!(
            route(&rules, "+15550003123"),
            Route::Machine(Machine::HangupAfterPages(1))
        );
        assert_eq!(
            route(&rules, "+15550004123"),
            Route::Machine(Machine::Silent)
        );
        assert_eq!(
            route(&rules, "+14155550100"),
            Route::Machine(Machine::Receive)
        );
    }
}
