//! Who may fax through a faxbox by e-mail, and what a recipient address says: the
//! `<number>@<domain>` form (no source routes, no `%` hacks), and the faxbox's
//! `smtp_permission_list` — exact addresses, `@domain` (or a bare domain), or regular
//! expressions that must match the whole sender address, never a substring (Kazoo's
//! unanchored match let `example.com` admit `x@evil-example.com.attacker.net`) — plus an
//! optional `smtp_allowed_networks` list of client addresses.

use std::net::IpAddr;

use regex::Regex;
use serde_json::Value;

use super::reply::Reply;
use crate::netblock::AllowList;

/// Splits a recipient into its local part and lower-cased domain, refusing source routes,
/// `%` and `!` forms (relay tricks) and addresses without a domain.
pub fn split_address(address: &str) -> Result<(&str, String), Reply> {
    if address.starts_with('@') || address.contains('%') || address.contains('!') {
        return Err(Reply::not_allowed(
            "relaying denied: source routes and % addresses are not accepted",
        ));
    }
    match address.rsplit_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && local.len() <= 64
                && domain.len() <= 255 =>
        {
            Ok((local, domain.to_ascii_lowercase()))
        }
        _ => Err(Reply::bad_address(
            "address must be <fax number>@<faxbox domain>",
        )),
    }
}

/// The fax number of a local part: digits with an optional leading `+`; the separators
/// people write in numbers (`-`, `.`, spaces, brackets) are dropped, anything else refused.
pub fn fax_number(local: &str) -> Result<String, Reply> {
    let mut number = String::new();
    for (i, c) in local.trim_matches('"').chars().enumerate() {
        match c {
            '0'..='9' => number.push(c),
            '+' if i == 0 => number.push(c),
            '-' | '.' | ' ' | '(' | ')' => {}
            _ => {
                return Err(Reply::no_mailbox(&format!(
                    "{local}: the local part must be a fax number"
                )));
            }
        }
    }
    if !number.chars().any(|c| c.is_ascii_digit()) {
        return Err(Reply::no_mailbox(&format!("{local}: no fax number")));
    }
    Ok(number)
}

/// One entry of a `smtp_permission_list`.
#[derive(Clone, Debug)]
pub enum Permission {
    /// The whole address, case-insensitive.
    Address(String),
    /// Every address of a domain (`@example.com` or `example.com`).
    Domain(String),
    /// A pattern matching the whole address.
    Pattern(Regex),
}

const REGEX_META: &[char] = &[
    '^', '$', '*', '+', '?', '[', ']', '(', ')', '{', '}', '|', '\\',
];

impl Permission {
    /// Reads an entry; `None` for an empty entry or a pattern that does not compile.
    pub fn parse(entry: &str) -> Option<Self> {
        let e = entry.trim().to_ascii_lowercase();
        if e.is_empty() {
            return None;
        }
        if e.contains(REGEX_META) {
            let body = e.trim_start_matches('^').trim_end_matches('$');
            return regex::RegexBuilder::new(&format!("^(?:{body})$"))
                .case_insensitive(true)
                .size_limit(1 << 16)
                .build()
                .ok()
                .map(Permission::Pattern);
        }
        if let Some(d) = e.strip_prefix('@') {
            return Some(Permission::Domain(d.to_string()));
        }
        if e.contains('@') {
            Some(Permission::Address(e))
        } else {
            Some(Permission::Domain(e))
        }
    }

    /// Whether `sender` (lower-case) is admitted.
    pub fn admits(&self, sender: &str) -> bool {
        match self {
            Permission::Address(a) => a == sender,
            Permission::Domain(d) => sender
                .rsplit_once('@')
                .is_some_and(|(_, domain)| domain == d),
            Permission::Pattern(r) => r.is_match(sender),
        }
    }
}

/// The sender rules of one faxbox.
#[derive(Clone, Debug, Default)]
pub struct SenderRules {
    pub permissions: Vec<Permission>,
    /// The faxbox owner's e-mail address (always admitted).
    pub owner_email: Option<String>,
    /// Client networks allowed to send to the faxbox (empty: any).
    pub networks: Option<AllowList>,
}

/// The outcome of [`SenderRules::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused, with the reason for the client and the log.
    Refused(String),
}

impl SenderRules {
    /// The rules of a faxbox document (`smtp_permission_list`, `smtp_allowed_networks`).
    pub fn of_faxbox(doc: &Value, owner_email: Option<String>) -> Self {
        let permissions = doc
            .get("smtp_permission_list")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .filter_map(Permission::parse)
                    .collect()
            })
            .unwrap_or_default();
        let networks = doc
            .get("smtp_allowed_networks")
            .and_then(Value::as_array)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let entries: Vec<&str> = l.iter().filter_map(Value::as_str).collect();
                // An unreadable list admits nobody rather than everybody.
                AllowList::parse(&entries).unwrap_or_default()
            });
        Self {
            permissions,
            owner_email: owner_email.map(|e| e.to_ascii_lowercase()),
            networks,
        }
    }

    /// Judges a sender: the client network first, then an authenticated user of the
    /// faxbox's account, the owner's address, the permission list; an empty list admits
    /// nobody unless `allow_all_when_empty` (`allow_all_addresses_when_empty`).
    pub fn check(
        &self,
        sender: &str,
        peer: Option<IpAddr>,
        authenticated_in_account: bool,
        allow_all_when_empty: bool,
        faxbox_id: &str,
    ) -> Verdict {
        if let (Some(nets), Some(ip)) = (&self.networks, peer)
            && !nets.allows(ip)
        {
            return Verdict::Refused(format!(
                "client {ip} is not in the networks allowed to send to faxbox {faxbox_id}"
            ));
        }
        if authenticated_in_account {
            return Verdict::Allowed;
        }
        let sender = sender.to_ascii_lowercase();
        if self.owner_email.as_deref() == Some(sender.as_str()) {
            return Verdict::Allowed;
        }
        if self.permissions.is_empty() && self.owner_email.is_none() {
            return if allow_all_when_empty {
                Verdict::Allowed
            } else {
                Verdict::Refused(format!(
                    "faxbox {faxbox_id} has no smtp_permission_list and policy does not allow everybody"
                ))
            };
        }
        if self.permissions.iter().any(|p| p.admits(&sender)) {
            Verdict::Allowed
        } else {
            Verdict::Refused(format!(
                "address {sender} is not allowed on faxbox {faxbox_id}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recipients() {
        let parse = |a: &str| -> Result<(String, String), Reply> {
            let (local, domain) = split_address(a)?;
            Ok((fax_number(local)?, domain))
        };
        assert_eq!(
            parse("+1 (555) 123-4567@Fax.Example.COM").unwrap(),
            ("+15551234567".to_string(), "fax.example.com".to_string())
        );
        assert_eq!(parse("alice@fax.example").unwrap_err().code, 550);
        assert_eq!(parse("1555@a@b").unwrap_err().code, 550);
        assert_eq!(parse("@a,@b:1555@c").unwrap_err().enhanced, Some("5.7.1"));
        assert_eq!(parse("1555%x@c").unwrap_err().enhanced, Some("5.7.1"));
        assert_eq!(parse("15551234567").unwrap_err().code, 553);
        assert_eq!(parse("--@c").unwrap_err().code, 550);
    }

    #[test]
    fn permissions_never_match_substrings() {
        let doc = json!({"smtp_permission_list": [
            "alice@example.com", "@partner.example", "example.org", "^scan-[0-9]+@office\\.example$"
        ]});
        let rules = SenderRules::of_faxbox(&doc, None);
        let ok = |s: &str| rules.check(s, None, false, false, "fb") == Verdict::Allowed;
        assert!(ok("alice@example.com"));
        assert!(ok("ALICE@example.com"));
        assert!(!ok("malice@example.com"));
        assert!(!ok("alice@example.com.attacker.net"));
        assert!(ok("bob@partner.example"));
        assert!(!ok("bob@evil-partner.example"));
        assert!(!ok("bob@partner.example.attacker.net"));
        assert!(ok("x@example.org"));
        assert!(!ok("x@evil-example.org.attacker.net"));
        assert!(ok("scan-12@office.example"));
        assert!(!ok("scan-12@office.example.attacker.net"));
        assert!(!ok("xscan-12@office.example"));
    }

    #[test]
    fn owner_empty_list_auth_and_networks() {
        let doc = json!({});
        let rules = SenderRules::of_faxbox(&doc, Some("Owner@Example.com".into()));
        assert_eq!(
            rules.check("owner@example.com", None, false, false, "fb"),
            Verdict::Allowed
        );
        assert!(matches!(
            rules.check("other@example.com", None, false, false, "fb"),
            Verdict::Refused(_)
        ));
        let empty = SenderRules::of_faxbox(&doc, None);
        assert!(matches!(
            empty.check("a@b", None, false, false, "fb"),
            Verdict::Refused(_)
        ));
        assert_eq!(
            empty.check("a@b", None, false, true, "fb"),
            Verdict::Allowed
        );
        assert_eq!(
            empty.check("a@b", None, true, false, "fb"),
            Verdict::Allowed
        );
        let lan = SenderRules::of_faxbox(
            &json!({"smtp_permission_list": ["@example.com"], "smtp_allowed_networks": ["10.0.0.0/8"]}),
            None,
        );
        let inside: IpAddr = "10.1.2.3".parse().unwrap();
        let outside: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            lan.check("a@example.com", Some(inside), false, false, "fb"),
            Verdict::Allowed
        );
        assert!(matches!(
            lan.check("a@example.com", Some(outside), true, false, "fb"),
            Verdict::Refused(_)
        ));
    }
}
