//! T.38 on an incoming fax call (Kazoo's `get_inbound_t38_settings`, spec kazoo-fax §4.3):
//! which channel variables the receiving channel gets, from the carrier's fax option (the
//! channel variable `faxd_carrier_fax_option` the dialplan sets for a carrier that does
//! T.38: `true`, `false` or `auto`) and the receiver's (`receive_t38` of the answer).
//!
//! Unlike Kazoo, a carrier option of `auto` counts as `true` (Kazoo let it fall through to
//! the catch-all row and disabled T.38 altogether), and every row that passes T.38 through
//! also enables it (FreeSWITCH ≥ 1.6 needs `fax_enable_t38` with `t38_passthru`).

/// The carrier's fax option as the dialplan gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// The call did not come through a carrier resource (no option set).
    Unknown,
    T38(bool),
}

impl Carrier {
    /// Reads `true`/`false`/`auto` (and `1`/`0`, `yes`/`no`); anything else is
    /// [`Carrier::Unknown`].
    pub fn parse(value: Option<&str>) -> Self {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Some("true" | "auto" | "1" | "yes" | "on") => Carrier::T38(true),
            Some("false" | "0" | "no" | "off") => Carrier::T38(false),
            _ => Carrier::Unknown,
        }
    }
}

/// What the receiving channel is set up with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `fax_enable_t38`: accept a T.38 re-INVITE.
    pub enable: bool,
    /// `fax_enable_t38_request`: send one.
    pub request: bool,
    /// `t38_passthru`.
    pub passthru: bool,
    /// `execute_on_answer=t38_gateway <self|peer>`.
    pub gateway: Option<&'static str>,
}

impl Settings {
    /// The channel variables to `set` before answering, in order.
    pub fn variables(&self) -> Vec<(&'static str, String)> {
        let flag = |b: bool| if b { "true" } else { "false" }.to_string();
        let mut v = vec![
            ("fax_enable_t38", flag(self.enable)),
            ("fax_enable_t38_request", flag(self.request)),
        ];
        if self.passthru {
            v.push(("t38_passthru", "true".into()));
        }
        if let Some(side) = self.gateway {
            v.push(("execute_on_answer", format!("t38_gateway {side}")));
        }
        v
    }
}

/// The decision table.
pub fn decide(carrier: Carrier, receiver: bool) -> Settings {
    let s = |enable, request, passthru, gateway| Settings {
        enable,
        request,
        passthru,
        gateway,
    };
    match (carrier, receiver) {
        (Carrier::T38(true), true) => s(true, false, true, None),
        (Carrier::T38(true), false) => s(true, true, false, Some("peer")),
        (Carrier::T38(false), true) => s(true, true, false, Some("self")),
        (Carrier::T38(false), false) => s(true, false, true, None),
        (Carrier::Unknown, true) => s(true, true, false, Some("self")),
        (Carrier::Unknown, false) => Settings::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        assert_eq!(
            decide(Carrier::T38(true), true).variables(),
            vec![
                ("fax_enable_t38", "true".to_string()),
                ("fax_enable_t38_request", "false".to_string()),
                ("t38_passthru", "true".to_string()),
            ]
        );
        assert_eq!(decide(Carrier::T38(true), false).gateway, Some("peer"));
        assert_eq!(decide(Carrier::T38(false), true).gateway, Some("self"));
        assert!(decide(Carrier::T38(false), false).passthru);
        assert_eq!(decide(Carrier::Unknown, true).gateway, Some("self"));
        let off = decide(Carrier::Unknown, false);
        assert!(!off.enable && !off.request && !off.passthru && off.gateway.is_none());
    }

    #[test]
    fn a_carrier_on_auto_does_t38() {
        // Kazoo's defect: "auto" matched no row and turned T.38 off.
        assert_eq!(Carrier::parse(Some("auto")), Carrier::T38(true));
        assert_eq!(
            decide(Carrier::parse(Some("auto")), false).gateway,
            Some("peer")
        );
        assert_eq!(Carrier::parse(Some("bogus")), Carrier::Unknown);
        assert_eq!(Carrier::parse(None), Carrier::Unknown);
    }
}
