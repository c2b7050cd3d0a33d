//! The commands faxd writes on an event socket (spec §1.3–§1.6) and the `originate` /
//! `http_get` argument builders (§2.1, §2.2).
//!
//! Every command is one line (the command) plus header lines, ended by a blank line; a
//! value holding CR or LF would end the command early and is refused, never sent.
//!
//! # Values in an originate's `{…}` block
//! FreeSWITCH reads a variable's value through three splitting passes, each of which strips
//! single quotes and consumes backslash escapes: the originate arguments are split on
//! spaces, the `{…}` block on commas, each variable at its first `=`. [`escape_value`] writes
//! a value so that what FreeSWITCH stores is exactly the value:
//!
//! - a comma becomes `\,` (quotes do not protect commas);
//! - a single quote becomes `\'`. At the comma and `=` passes a bare quote followed by
//!   another one anywhere later (in the same value for the `=` pass, in the rest of the block
//!   for the comma pass) is taken as quoting and dropped, so every quote but the block's last
//!   is escaped again for those passes: `\\\'` for the last quote of a value when a later
//!   value holds one, `\\\\\\\'` for a value's earlier quotes;
//! - a backslash is doubled for each pass (eight on the wire for one stored);
//! - a value with a space is wrapped in single quotes (an unquoted space splits the
//!   originate's arguments).
//!
//! So `ACME's FS, Inc.` is written `'ACME\'s FS\, Inc.'`, as verified against FreeSWITCH
//! 1.10.12 (`tests/esl_replay.rs` holds the probes). Refused, because no writing of them
//! comes through intact: empty values (setting an empty variable removes it), leading or
//! trailing spaces (trimmed by every pass), control characters, `{` `}` (the end of the
//! block is found by counting braces, escapes and quotes notwithstanding), and `:_:` (it
//! separates whole originate strings before anything else is parsed: FreeSWITCH 1.10.12
//! answers `-ERR CHAN_NOT_IMPLEMENTED`).

use std::fmt::Write as _;

use super::message::EventFormat;

/// Why a command cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} {value:?} cannot be sent to FreeSWITCH: {reason}")]
    Refused {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
}

fn refuse(what: &'static str, value: &str, reason: &'static str) -> EncodeError {
    EncodeError::Refused {
        what,
        value: value.chars().take(200).collect(),
        reason,
    }
}

/// Checks a piece of a command line: no line break.
fn line(what: &'static str, value: &str) -> Result<(), EncodeError> {
    if value.contains(['\r', '\n']) {
        return Err(refuse(what, value, "it holds a line break"));
    }
    Ok(())
}

/// A single word of a command (event names, header names, uuids, passwords): no spaces.
fn word(what: &'static str, value: &str) -> Result<(), EncodeError> {
    if value.is_empty() {
        return Err(EncodeError::Empty { what });
    }
    if value
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(refuse(
            what,
            value,
            "it holds a space or a control character",
        ));
    }
    Ok(())
}

/// A `sendmsg` payload (§1.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendMsg {
    /// Runs a dialplan application on the channel. An argument with a line break is sent as
    /// a `text/plain` body instead of an `execute-app-arg` header.
    Execute {
        app: String,
        arg: Option<String>,
        /// Echoed as `Application-UUID` in CHANNEL_EXECUTE / _COMPLETE.
        event_uuid: Option<String>,
        /// Serialise with the channel's other queued messages.
        event_lock: bool,
    },
    /// Hangs the channel up with a cause, e.g. `NORMAL_CLEARING`.
    Hangup { cause: String },
}

/// A command to FreeSWITCH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `auth <password>` (inbound mode, after `auth/request`).
    Auth { password: String },
    /// `event <format> <NAME …> [CUSTOM <subclass …>]`; subscriptions add up.
    Events {
        format: EventFormat,
        names: Vec<String>,
        custom: Vec<String>,
    },
    /// `api <command>`: answered by an `api/response` (blocks the connection meanwhile).
    Api { command: String },
    /// `bgapi <command>` with a `Job-UUID` chosen by faxd, so the waiter is registered
    /// before the BACKGROUND_JOB can arrive.
    BgApi { command: String, job_uuid: String },
    /// `filter <header> <value>`.
    Filter { header: String, value: String },
    /// `filter delete <header> [<value>]`.
    FilterDelete {
        header: String,
        value: Option<String>,
    },
    /// `filter delete all`.
    FilterDeleteAll,
    /// `sendmsg [<uuid>]` (outbound mode: the controlled channel when `uuid` is `None`).
    SendMsg { uuid: Option<String>, msg: SendMsg },
    /// Outbound mode, the first command: answered by the bare CHANNEL_DATA.
    Connect,
    /// `myevents [<uuid> [<format>]]`: the controlled channel's events.
    MyEvents {
        uuid: Option<String>,
        format: Option<EventFormat>,
    },
    /// `linger [<seconds>]`: keep the socket after hang-up for the last events.
    Linger { seconds: Option<u32> },
    /// `getvar <name>` (outbound mode): the value comes back as `Reply-Text`.
    GetVar { name: String },
    /// `exit`: the server says `+OK bye`, sends the disconnect notice and closes.
    Exit,
}

impl Command {
    /// The bytes to write.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = String::new();
        self.encode_into(&mut out)?;
        Ok(out.into_bytes())
    }

    /// Appends the command to `out` (left untouched on error).
    pub fn encode_into(&self, out: &mut String) -> Result<(), EncodeError> {
        let mut s = String::new();
        match self {
            Command::Auth { password } => {
                word("password", password)?;
                let _ = write!(s, "auth {password}\n\n");
            }
            Command::Events {
                format,
                names,
                custom,
            } => {
                if names.is_empty() && custom.is_empty() {
                    return Err(EncodeError::Empty { what: "event list" });
                }
                s.push_str("event ");
                s.push_str(format.as_str());
                for name in names {
                    word("event name", name)?;
                    s.push(' ');
                    s.push_str(name);
                }
                if !custom.is_empty() {
                    s.push_str(" CUSTOM");
                    for sub in custom {
                        word("event subclass", sub)?;
                        s.push(' ');
                        s.push_str(sub);
                    }
                }
                s.push_str("\n\n");
            }
            Command::Api { command } => {
                line("api command", command)?;
                word("api command", command.split(' ').next().unwrap_or(""))?;
                let _ = write!(s, "api {command}\n\n");
            }
            Command::BgApi { command, job_uuid } => {
                line("bgapi command", command)?;
                word("bgapi command", command.split(' ').next().unwrap_or(""))?;
                word("Job-UUID", job_uuid)?;
                let _ = write!(s, "bgapi {command}\nJob-UUID: {job_uuid}\n\n");
            }
            Command::Filter { header, value } => {
                word("filter header", header)?;
                line("filter value", value)?;
                if value.is_empty() {
                    return Err(EncodeError::Empty {
                        what: "filter value",
                    });
                }
                let _ = write!(s, "filter {header} {value}\n\n");
            }
            Command::FilterDelete { header, value } => {
                word("filter header", header)?;
                s.push_str("filter delete ");
                s.push_str(header);
                if let Some(value) = value {
                    line("filter value", value)?;
                    s.push(' ');
                    s.push_str(value);
                }
                s.push_str("\n\n");
            }
            Command::FilterDeleteAll => s.push_str("filter delete all\n\n"),
            Command::SendMsg { uuid, msg } => {
                s.push_str("sendmsg");
                if let Some(uuid) = uuid {
                    word("channel uuid", uuid)?;
                    s.push(' ');
                    s.push_str(uuid);
                }
                s.push('\n');
                encode_sendmsg(msg, &mut s)?;
            }
            Command::Connect => s.push_str("connect\n\n"),
            Command::MyEvents { uuid, format } => {
                s.push_str("myevents");
                if let Some(uuid) = uuid {
                    word("channel uuid", uuid)?;
                    s.push(' ');
                    s.push_str(uuid);
                }
                if let Some(format) = format {
                    if uuid.is_none() {
                        // FreeSWITCH reads the format as the second word: `myevents json`
                        // would take `json` for a uuid.
                        return Err(refuse(
                            "myevents format",
                            format.as_str(),
                            "a format needs a channel uuid before it",
                        ));
                    }
                    s.push(' ');
                    s.push_str(format.as_str());
                }
                s.push_str("\n\n");
            }
            Command::Linger { seconds } => match seconds {
                Some(n) => {
                    let _ = write!(s, "linger {n}\n\n");
                }
                None => s.push_str("linger\n\n"),
            },
            Command::GetVar { name } => {
                word("variable name", name)?;
                let _ = write!(s, "getvar {name}\n\n");
            }
            Command::Exit => s.push_str("exit\n\n"),
        }
        out.push_str(&s);
        Ok(())
    }
}

fn encode_sendmsg(msg: &SendMsg, s: &mut String) -> Result<(), EncodeError> {
    match msg {
        SendMsg::Execute {
            app,
            arg,
            event_uuid,
            event_lock,
        } => {
            word("application", app)?;
            let _ = writeln!(s, "call-command: execute\nexecute-app-name: {app}");
            let body = match arg {
                Some(arg) if arg.contains(['\r', '\n']) => Some(arg),
                Some(arg) => {
                    let _ = writeln!(s, "execute-app-arg: {arg}");
                    None
                }
                None => None,
            };
            if let Some(uuid) = event_uuid {
                word("event-uuid", uuid)?;
                let _ = writeln!(s, "event-uuid: {uuid}");
            }
            if *event_lock {
                s.push_str("event-lock: true\n");
            }
            match body {
                Some(body) => {
                    let _ = write!(
                        s,
                        "content-type: text/plain\ncontent-length: {}\n\n{body}",
                        body.len()
                    );
                }
                None => s.push('\n'),
            }
        }
        SendMsg::Hangup { cause } => {
            word("hangup cause", cause)?;
            let _ = write!(s, "call-command: hangup\nhangup-cause: {cause}\n\n");
        }
    }
    Ok(())
}

/// Writes a channel-variable value for an originate's `{…}` block (see the module docs);
/// `quote_follows`: whether a later value of the same block holds a single quote.
pub fn escape_value(value: &str, quote_follows: bool) -> Result<String, EncodeError> {
    const WHAT: &str = "variable value";
    if value.is_empty() {
        return Err(EncodeError::Empty { what: WHAT });
    }
    if value.starts_with(' ') || value.ends_with(' ') {
        return Err(refuse(
            WHAT,
            value,
            "FreeSWITCH trims leading and trailing spaces",
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(refuse(WHAT, value, "it holds a control character"));
    }
    if value.contains(['{', '}']) {
        return Err(refuse(
            WHAT,
            value,
            "a brace would end or unbalance the variable block",
        ));
    }
    if value.contains(":_:") {
        return Err(refuse(
            WHAT,
            value,
            "`:_:` separates whole originate strings before any unescaping",
        ));
    }
    let quotes = value.matches('\'').count();
    let mut seen_quotes = 0;
    let mut out = String::with_capacity(value.len() + 8);
    let spaced = value.contains(' ');
    if spaced {
        out.push('\'');
    }
    for c in value.chars() {
        match c {
            // One stored backslash: doubled for the `=` pass, again for the comma pass,
            // again for the space pass.
            '\\' => out.push_str(r"\\\\\\\\"),
            ',' => out.push_str(r"\,"),
            '\'' => {
                seen_quotes += 1;
                if seen_quotes < quotes {
                    // Still escaped when the `=` pass sees it.
                    out.push_str(r"\\\\\\\'");
                } else if quote_follows {
                    // Still escaped when the comma pass sees it.
                    out.push_str(r"\\\'");
                } else {
                    out.push_str(r"\'");
                }
            }
            c => out.push(c),
        }
    }
    if spaced {
        out.push('\'');
    }
    Ok(out)
}

/// Channel-variable names: letters, digits, `_`, `-`, `.`.
fn var_name(name: &str) -> Result<(), EncodeError> {
    if name.is_empty() {
        return Err(EncodeError::Empty {
            what: "variable name",
        });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(refuse(
            "variable name",
            name,
            "only letters, digits, '_', '-' and '.' are allowed",
        ));
    }
    Ok(())
}

/// A piece of an originate or http_get argument written as is: no space (it would split the
/// arguments), quote, backslash (both consumed by the argument split) or control character.
fn bare(what: &'static str, value: &str) -> Result<(), EncodeError> {
    if value.is_empty() {
        return Err(EncodeError::Empty { what });
    }
    if value
        .chars()
        .any(|c| c == ' ' || c == '\'' || c == '\\' || c.is_control())
    {
        return Err(refuse(
            what,
            value,
            "spaces, quotes, backslashes and control characters cannot be carried",
        ));
    }
    Ok(())
}

/// `originate {var=value,…}<dial string> &<app>(<arg>)`, the call faxd places: channel
/// variables in the order given, then the endpoint, then the application the answered
/// channel runs (`txfax` with the local file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Originate {
    vars: Vec<(String, String)>,
    dial_string: String,
    app: String,
    arg: String,
}

impl Originate {
    /// A call to `dial_string` (e.g. `sofia/gateway/carrier/+15550199`) that sends `tiff`
    /// with `txfax`.
    pub fn txfax(dial_string: &str, tiff: &str) -> Self {
        Self::app(dial_string, "txfax", tiff)
    }

    /// A call to `dial_string` that runs `app(arg)` once answered.
    pub fn app(dial_string: &str, app: &str, arg: &str) -> Self {
        Self {
            vars: Vec::new(),
            dial_string: dial_string.to_string(),
            app: app.to_string(),
            arg: arg.to_string(),
        }
    }

    /// Adds a channel variable (written in the order added).
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    /// The api command text (for [`Command::BgApi`]).
    pub fn command(&self) -> Result<String, EncodeError> {
        let mut s = String::from("originate ");
        if !self.vars.is_empty() {
            s.push('{');
            let last_quoted = self.vars.iter().rposition(|(_, v)| v.contains('\''));
            for (i, (name, value)) in self.vars.iter().enumerate() {
                var_name(name)?;
                if i > 0 {
                    s.push(',');
                }
                s.push_str(name);
                s.push('=');
                let quote_follows = last_quoted.is_some_and(|last| last > i);
                s.push_str(&escape_value(value, quote_follows)?);
            }
            s.push('}');
        }
        bare("dial string", &self.dial_string)?;
        s.push_str(&self.dial_string);
        s.push_str(" &");
        word("application", &self.app)?;
        if self.app.contains(['(', ')']) {
            return Err(refuse(
                "application",
                &self.app,
                "parentheses delimit its argument",
            ));
        }
        s.push_str(&self.app);
        s.push('(');
        if !self.arg.is_empty() {
            bare("application argument", &self.arg)?;
            if self.arg.contains(')') {
                return Err(refuse(
                    "application argument",
                    &self.arg,
                    "the argument ends at the first ')'",
                ));
            }
            s.push_str(&self.arg);
        }
        s.push(')');
        Ok(s)
    }
}

/// `http_get [{prefetch=true}]<url>` (mod_http_cache): the answer is the local path of the
/// cached copy, which `txfax` can read.
pub fn http_get(url: &str, prefetch: bool) -> Result<String, EncodeError> {
    bare("url", url)?;
    if url.starts_with('{') {
        return Err(refuse("url", url, "it would be read as an option block"));
    }
    Ok(if prefetch {
        format!("http_get {{prefetch=true}}{url}")
    } else {
        format!("http_get {url}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(c: Command) -> String {
        match c.encode() {
            Ok(b) => String::from_utf8(b).unwrap_or_default(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn commands_end_with_a_blank_line() {
        assert_eq!(
            enc(Command::Auth {
                password: "ClueCon".into()
            }),
            "auth ClueCon\n\n"
        );
        assert_eq!(
            enc(Command::Events {
                format: EventFormat::Json,
                names: vec!["BACKGROUND_JOB".into()],
                custom: vec![]
            }),
            "event json BACKGROUND_JOB\n\n"
        );
        assert_eq!(enc(Command::Linger { seconds: Some(30) }), "linger 30\n\n");
        assert_eq!(
            enc(Command::FilterDelete {
                header: "Unique-ID".into(),
                value: None
            }),
            "filter delete Unique-ID\n\n"
        );
    }

    #[test]
    fn a_multi_line_application_argument_goes_in_a_body() {
        let c = Command::SendMsg {
            uuid: Some("u1".into()),
            msg: SendMsg::Execute {
                app: "set".into(),
                arg: Some("a\nb".into()),
                event_uuid: None,
                event_lock: true,
            },
        };
        assert_eq!(
            enc(c),
            "sendmsg u1\ncall-command: execute\nexecute-app-name: set\nevent-lock: true\ncontent-type: text/plain\ncontent-length: 3\n\na\nb"
        );
    }

    #[test]
    fn line_breaks_never_reach_the_wire() {
        for c in [
            Command::Auth {
                password: "a\nb".into(),
            },
            Command::Api {
                command: "status\n\nexit".into(),
            },
            Command::BgApi {
                command: "status".into(),
                job_uuid: "x\r\ny".into(),
            },
            Command::Filter {
                header: "Unique-ID".into(),
                value: "a\nb".into(),
            },
            Command::SendMsg {
                uuid: None,
                msg: SendMsg::Hangup {
                    cause: "A\nB".into(),
                },
            },
            Command::MyEvents {
                uuid: None,
                format: Some(EventFormat::Json),
            },
        ] {
            assert!(c.encode().is_err(), "{c:?}");
        }
    }

    #[test]
    fn values_that_cannot_be_carried_are_refused() {
        for v in ["", " lead", "trail ", "a\tb", "a\nb", "a{b", "a}b", "a:_:b"] {
            assert!(escape_value(v, false).is_err(), "{v:?}");
        }
        assert!(
            Originate::txfax("sofia/gw/x 1", "/a.tiff")
                .command()
                .is_err()
        );
        assert!(
            Originate::txfax("sofia/gw/x", "/a b.tiff")
                .command()
                .is_err()
        );
        assert!(
            Originate::txfax("sofia/gw/x", "/a).tiff")
                .command()
                .is_err()
        );
        assert!(
            Originate::txfax("sofia/gw/x", "/a.tiff")
                .var("bad name", "x")
                .command()
                .is_err()
        );
        assert!(http_get("http://h/a b", true).is_err());
    }

    #[test]
    fn escaping_examples() {
        for (v, wire) in [
            ("+15550100", "+15550100"),
            ("ACME Fax", "'ACME Fax'"),
            ("ACME's", r"ACME\'s"),
            ("x,y", r"x\,y"),
            ("ACME's FS, Inc.", r"'ACME\'s FS\, Inc.'"),
            ("a=b\"c", "a=b\"c"),
        ] {
            assert_eq!(escape_value(v, false).as_deref(), Ok(wire), "{v:?}");
        }
        assert_eq!(escape_value("a'b", true).as_deref(), Ok(r"a\\\'b"));
        assert_eq!(
            escape_value("a'b'c", false).as_deref(),
            Ok(r"a\\\\\\\'b\'c")
        );
        assert_eq!(escape_value(r"a\b", false).as_deref(), Ok(r"a\\\\\\\\b"));
    }
}
