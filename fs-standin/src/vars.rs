//! `originate` argument parsing with FreeSWITCH's rules (spec §2.1): the arguments are split
//! on spaces, where single quotes protect spaces and are stripped, `\'` is a quote and
//! a backslash protects the next character (and is dropped before a quote); then
//! the `{…}` / `<…>` / `[…]` blocks of the call URL are split on commas (or on `<c>` after a
//! leading `^^<c>`), where `\,` is a comma and `\s` a space; a backslash before anything
//! else stays.

/// FreeSWITCH's answer to an `originate` it cannot split into a URL and a destination.
pub const USAGE: &str = "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] [<cid_name>] [<cid_num>] [<timeout_sec>]\n";

/// A parsed `originate`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Originate {
    /// Every variable of the call URL's blocks, in order (values unescaped).
    pub vars: Vec<(String, String)>,
    /// The dial string after the blocks, e.g. `sofia/gateway/carrier/+15550199`.
    pub dial: String,
    /// `txfax` of `&txfax(/path)`; empty when the destination is a dialplan extension.
    pub app: String,
    /// `/path` of `&txfax(/path)`, or the extension.
    pub app_arg: String,
}

impl Originate {
    /// The value of a variable (the last one set wins, as FreeSWITCH does).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The number dialled: the last `/` segment of the dial string (`sofia/gateway/carrier/
    /// +15550199`), or the middle one of `loopback/<number>/<context>`; `sip:` and an
    /// `@host` part are removed.
    pub fn number(&self) -> String {
        let segs: Vec<&str> = self.dial.split('/').collect();
        let seg = if segs.first() == Some(&"loopback") && segs.len() >= 2 {
            segs[1]
        } else {
            segs.last().copied().unwrap_or("")
        };
        let seg = seg.strip_prefix("sip:").unwrap_or(seg);
        seg.split('@').next().unwrap_or("").to_string()
    }
}

/// Why an `originate` was refused, as the text FreeSWITCH answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

/// Splits the argument string of `originate` like `switch_separate_string` on spaces.
pub fn split_args(s: &str) -> Result<Vec<String>, Refused> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut started = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // A backslash protects the next character (a space does not split); it is
            // dropped only before a quote.
            '\\' => {
                match chars.next() {
                    Some('\'') => cur.push('\''),
                    Some(n) => {
                        cur.push('\\');
                        cur.push(n);
                    }
                    None => cur.push('\\'),
                }
                started = true;
            }
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            ' ' if !quoted => {
                if started {
                    args.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            _ => {
                cur.push(c);
                started = true;
            }
        }
    }
    if quoted {
        return Err(Refused(USAGE.into()));
    }
    if started {
        args.push(cur);
    }
    Ok(args)
}

/// Splits one variable block's content into `(name, value)` pairs.
pub fn parse_block(content: &str) -> Vec<(String, String)> {
    let (sep, content) = match content.strip_prefix("^^") {
        Some(rest) => match rest.chars().next() {
            Some(c) => (c, &rest[c.len_utf8()..]),
            None => (',', rest),
        },
        None => (',', content),
    };
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut chars = content.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some(&n) if n == sep => {
                    cur.push(n);
                    chars.next();
                }
                Some('s') => {
                    cur.push(' ');
                    chars.next();
                }
                _ => cur.push('\\'),
            }
        } else if c == sep {
            items.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    items.push(cur);
    items
        .into_iter()
        .filter_map(|item| {
            let (n, v) = item.split_once('=')?;
            let n = n.trim();
            (!n.is_empty()).then(|| (n.to_string(), v.to_string()))
        })
        .collect()
}

/// Parses the argument string of `originate`.
pub fn parse_originate(arg: &str) -> Result<Originate, Refused> {
    let args = split_args(arg)?;
    if args.len() < 2 {
        return Err(Refused(USAGE.into()));
    }
    let mut url = args[0].as_str();
    let mut vars = Vec::new();
    while let Some(open) = url.chars().next() {
        let close = match open {
            '{' => '}',
            '<' => '>',
            '[' => ']',
            _ => break,
        };
        let Some(end) = url.find(close) else {
            return Err(Refused("-ERR DESTINATION_OUT_OF_ORDER\n".into()));
        };
        vars.extend(parse_block(&url[1..end]));
        url = &url[end + 1..];
    }
    if url.is_empty() {
        return Err(Refused("-ERR DESTINATION_OUT_OF_ORDER\n".into()));
    }
    let dest = args[1].as_str();
    let (app, app_arg) = match dest.strip_prefix('&') {
        Some(app) => match app.split_once('(') {
            Some((name, rest)) => (
                name.to_string(),
                rest.split(')').next().unwrap_or("").to_string(),
            ),
            None => (app.to_string(), String::new()),
        },
        None => (String::new(), dest.to_string()),
    };
    Ok(Originate {
        vars,
        dial: url.to_string(),
        app,
        app_arg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(arg: &str) -> Result<String, Refused> {
        let o = parse_originate(&format!("{arg}loopback/park/default &park()"))?;
        Ok(o.var("fax_header").unwrap_or("_undef_").to_string())
    }

    #[test]
    fn values_as_freeswitch_stores_them() {
        // Spec §2.1, verified on FreeSWITCH 1.10.12 with uuid_getvar.
        assert_eq!(header_of("{fax_header='ACME Fax'}").unwrap(), "ACME Fax");
        assert_eq!(header_of("{fax_header=ACME\\ Fax}").unwrap(), "ACME\\ Fax");
        assert_eq!(
            header_of("{fax_header='ACME\\'s Fax'}").unwrap(),
            "ACME's Fax"
        );
        assert_eq!(header_of("{fax_header=ACME\\'s}").unwrap(), "ACME's");
        assert_eq!(header_of("{fax_header=ACME's}"), Err(Refused(USAGE.into())));
        assert_eq!(
            header_of("{fax_header='ACME\\'s FS, Inc.'}").unwrap(),
            "ACME's FS"
        );
        assert_eq!(
            header_of("{fax_header='ACME\\'s FS\\, Inc.'}").unwrap(),
            "ACME's FS, Inc."
        );
        assert_eq!(
            header_of("{^^:fax_header='ACME\\'s FS, Inc.':fax_ident=+15550100}").unwrap(),
            "ACME's FS, Inc."
        );
        assert_eq!(
            header_of("{fax_header=ACME\\'s\\sFS\\,\\sInc.}").unwrap(),
            "ACME's FS, Inc."
        );
        let o = parse_originate("{a=x\\,y,b='x,y'}loopback/park/default &park()").unwrap();
        assert_eq!(o.var("a"), Some("x,y"));
        assert_eq!(o.var("b"), Some("x"));
    }

    #[test]
    fn dial_string_app_and_number() {
        let o = parse_originate(
            "{origination_uuid=abc,fax_ident=+15550100}sofia/gateway/carrier/+15550199 &txfax(/tmp/a b.tiff)",
        );
        // An unquoted space splits the arguments: the path is cut.
        let o = o.unwrap();
        assert_eq!(o.app, "txfax");
        assert_eq!(o.number(), "+15550199");
        let o = parse_originate("{x=1}loopback/+15550199/default &txfax(/tmp/a.tiff)").unwrap();
        assert_eq!(o.number(), "+15550199");
        assert_eq!(o.app_arg, "/tmp/a.tiff");
        let o = parse_originate("sofia/test/sip:15550001234@127.0.0.1:5099 &txfax(/x)").unwrap();
        assert_eq!(o.number(), "15550001234");
        assert_eq!(parse_originate("justone"), Err(Refused(USAGE.into())));
    }
}
