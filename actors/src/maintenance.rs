//! Maintenance commands (`faxd sup <module> <function> [args…]`): parsing and the pure parts
//! of their output. fax_maintenance runs them.

use std::time::Duration;

use faxd::model::JobStatus;
use serde_json::Value;

/// A parsed maintenance command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `faxd_maintenance status`
    Status,
    /// `faxd_maintenance nodes`: the cluster's members, each with the accounts whose
    /// outbound queue it owns and the transmissions it runs.
    Nodes,
    /// `kapps_config get <category> <key>`
    ConfigGet { category: String, key: String },
    /// `kapps_config set <category> <key> <json value>`
    ConfigSet {
        category: String,
        key: String,
        value: Value,
    },
    /// `fax_maintenance pending_jobs`: queued jobs (pending and locked).
    PendingJobs,
    /// `fax_maintenance active_jobs`: jobs being transmitted, by node.
    ActiveJobs,
    /// `fax_maintenance account_jobs <account> [state=pending]`
    AccountJobs { account: String, state: JobStatus },
    /// `fax_maintenance faxbox_jobs <faxbox> [state=pending]`
    FaxboxJobs { faxbox: String, state: JobStatus },
    /// `fax_maintenance restart_job <job>`: back to pending, due now.
    RestartJob { job: String },
    /// `fax_maintenance update_job <job> <state>`
    UpdateJob { job: String, state: JobStatus },
    /// `crossbar_maintenance create_account <name> <realm> <username> <password>`
    CreateAccount {
        name: String,
        realm: String,
        username: String,
        password: String,
    },
}

/// Commands known, for help and errors.
pub const USAGE: &str = "commands:\n  \
    faxd_maintenance status\n  \
    faxd_maintenance nodes\n  \
    kapps_config get fax <key>\n  \
    kapps_config set fax <key> <json value>\n  \
    fax_maintenance pending_jobs\n  \
    fax_maintenance active_jobs\n  \
    fax_maintenance account_jobs <account> [state]\n  \
    fax_maintenance faxbox_jobs <faxbox> [state]\n  \
    fax_maintenance restart_job <job>\n  \
    fax_maintenance update_job <job> <state>\n  \
    crossbar_maintenance create_account <name> <realm> <username> <password>";

/// Parses `module function args…`.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["faxd_maintenance", "status"] => Ok(Command::Status),
        ["faxd_maintenance", "nodes"] => Ok(Command::Nodes),
        ["kapps_config", "get", category, key] => Ok(Command::ConfigGet {
            category: category.to_string(),
            key: key.to_string(),
        }),
        ["kapps_config", "set", category, key, value @ ..] if !value.is_empty() => {
            let raw = value.join(" ");
            // Kazoo's sup takes Erlang terms; here a JSON value, or a bare word as a string.
            let value = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
            Ok(Command::ConfigSet {
                category: category.to_string(),
                key: key.to_string(),
                value,
            })
        }
        ["fax_maintenance", "pending_jobs"] => Ok(Command::PendingJobs),
        ["fax_maintenance", "active_jobs"] => Ok(Command::ActiveJobs),
        ["fax_maintenance", "account_jobs", account, rest @ ..] if rest.len() <= 1 => {
            Ok(Command::AccountJobs {
                account: account.to_string(),
                state: state_arg(rest.first().copied())?,
            })
        }
        ["fax_maintenance", "faxbox_jobs", faxbox, rest @ ..] if rest.len() <= 1 => {
            Ok(Command::FaxboxJobs {
                faxbox: faxbox.to_string(),
                state: state_arg(rest.first().copied())?,
            })
        }
        ["fax_maintenance", "restart_job", job] => Ok(Command::RestartJob {
            job: job.to_string(),
        }),
        ["fax_maintenance", "update_job", job, state] => Ok(Command::UpdateJob {
            job: job.to_string(),
            state: state.parse()?,
        }),
        [
            "crossbar_maintenance",
            "create_account",
            name,
            realm,
            username,
            password,
        ] => Ok(Command::CreateAccount {
            name: name.to_string(),
            realm: realm.to_string(),
            username: username.to_string(),
            password: password.to_string(),
        }),
        _ => Err(format!("unknown command '{}'\n{USAGE}", redacted(args))),
    }
}

fn state_arg(s: Option<&str>) -> Result<JobStatus, String> {
    s.map_or(Ok(JobStatus::Pending), str::parse)
}

/// A text table: a header row and left-aligned columns two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// An account's outbound queue owner, as its ownership document (`pvt_type`
/// `outbound_owner`, faxes database) names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRow {
    pub account_id: String,
    /// The holder; empty: released.
    pub node: String,
    /// When the ownership runs out unless renewed, unix ms (the holder's clock).
    pub expires_ms: i64,
}

impl OwnerRow {
    /// Reads an ownership document (`None`: no account named in it).
    pub fn from_doc(doc: &Value) -> Option<OwnerRow> {
        let s = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let account_id = Some(s("account_id"))
            .filter(|a| !a.is_empty())
            .or_else(|| {
                doc.get("_id")
                    .and_then(Value::as_str)
                    .and_then(|id| id.strip_prefix("faxd_owner_"))
                    .map(str::to_string)
            })?;
        Some(OwnerRow {
            account_id,
            node: s("node"),
            expires_ms: doc.get("expires_ms").and_then(Value::as_i64).unwrap_or(0),
        })
    }
}

/// A transmission being run (a `processing` job).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRow {
    /// The node running it (`pvt_job_node`; empty if the job names none).
    pub node: String,
    pub job_id: String,
    /// Destination number (empty if unknown).
    pub to: String,
}

/// Width `faxd_maintenance nodes` wraps its id lists at.
const WRAP: usize = 100;

/// `label: a, b, c` indented by two, wrapped at [`WRAP`] columns with continuation lines
/// aligned under the first item.
fn wrapped(label: &str, items: &[String]) -> String {
    let head = format!("  {label}: ");
    let indent = " ".repeat(head.len());
    let mut out = head.clone();
    let mut col = head.len();
    for (i, item) in items.iter().enumerate() {
        let piece = if i + 1 < items.len() {
            format!("{item},")
        } else {
            item.clone()
        };
        if i > 0 {
            if col + 1 + piece.len() > WRAP {
                out.push('\n');
                out.push_str(&indent);
                col = indent.len();
            } else {
                out.push(' ');
                col += 1;
            }
        }
        out.push_str(&piece);
        col += piece.len();
    }
    out.push('\n');
    out
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `faxd_maintenance nodes`: one block per node, sorted by name — this node (`me`), the
/// linked `members`, then holders named by ownership documents or running jobs that are not
/// linked — with the accounts whose queue it owns (ownership expired by `now_ms` shown
/// apart), how many queues run there (`queues`: `(node, account)` from the process groups)
/// and the transmissions it runs. A queue running on a node that the ownership documents do
/// not name as its owner is listed under the node (a handover under way, or a fault). Accounts
/// with queued work (`queued`) that no ownership document names a holder for are listed last,
/// and the count of released ones.
pub fn render_nodes(
    me: &str,
    members: &[String],
    owners: &[OwnerRow],
    queues: &[(String, String)],
    runs: &[RunRow],
    queued: &[String],
    now_ms: i64,
) -> String {
    use std::collections::{BTreeMap, BTreeSet};
    #[derive(Default)]
    struct Block {
        linked: bool,
        accounts: BTreeSet<String>,
        expired: BTreeSet<String>,
        queues: BTreeSet<String>,
        runs: Vec<String>,
    }
    let mut nodes: BTreeMap<String, Block> = BTreeMap::new();
    for m in members.iter().map(String::as_str).chain([me]) {
        nodes.entry(m.to_string()).or_default().linked = true;
    }
    let mut owned = BTreeSet::new();
    let mut named = BTreeSet::new();
    let mut released = BTreeSet::new();
    for o in owners {
        if o.node.is_empty() {
            released.insert(o.account_id.clone());
            continue;
        }
        named.insert(o.account_id.clone());
        let block = nodes.entry(o.node.clone()).or_default();
        if o.expires_ms < now_ms {
            block.expired.insert(o.account_id.clone());
        } else {
            block.accounts.insert(o.account_id.clone());
            owned.insert(o.account_id.clone());
        }
    }
    for (node, account) in queues {
        nodes
            .entry(node.clone())
            .or_default()
            .queues
            .insert(account.clone());
    }
    for r in runs {
        let node = if r.node.is_empty() {
            "(no node)"
        } else {
            r.node.as_str()
        };
        let job = if r.to.is_empty() {
            r.job_id.clone()
        } else {
            format!("{} ({})", r.job_id, r.to)
        };
        nodes.entry(node.to_string()).or_default().runs.push(job);
    }
    let linked = nodes.values().filter(|b| b.linked).count();
    let mut out = format!("nodes: {linked} (this node {me})");
    let unlinked = nodes.len() - linked;
    if unlinked > 0 {
        out.push_str(&format!(", {unlinked} more not linked"));
    }
    out.push('\n');
    for (name, mut b) in nodes {
        let tag = if name == me {
            " (this node)"
        } else if !b.linked {
            " (not linked)"
        } else {
            ""
        };
        let mut accounts = count(b.accounts.len(), "account", "accounts");
        if !b.expired.is_empty() {
            accounts.push_str(&format!(" (+{} expired)", b.expired.len()));
        }
        out.push_str(&format!(
            "{name}{tag}: {accounts}, {} running, {}\n",
            count(b.queues.len(), "queue", "queues"),
            count(b.runs.len(), "transmission", "transmissions")
        ));
        let unowned: Vec<String> = b.queues.difference(&b.accounts).cloned().collect();
        if !b.accounts.is_empty() {
            out.push_str(&wrapped("accounts", &Vec::from_iter(b.accounts)));
        }
        if !unowned.is_empty() {
            out.push_str(&wrapped("queues not owned here", &unowned));
        }
        if !b.expired.is_empty() {
            out.push_str(&wrapped("expired", &Vec::from_iter(b.expired)));
        }
        if !b.runs.is_empty() {
            b.runs.sort();
            out.push_str(&wrapped("jobs", &b.runs));
        }
    }
    let waiting: Vec<String> = queued
        .iter()
        .filter(|a| !named.contains(*a))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !waiting.is_empty() {
        out.push_str(&format!(
            "no owner: {} with queued work\n",
            count(waiting.len(), "account", "accounts")
        ));
        out.push_str(&wrapped("accounts", &waiting));
    }
    let released: Vec<String> = released.difference(&owned).cloned().collect();
    if !released.is_empty() {
        out.push_str(&format!(
            "released: {}\n",
            count(released.len(), "account", "accounts")
        ));
    }
    out
}

/// Gregorian seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn gregorian_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(faxd::time::gregorian_to_unix(secs), 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// `1d 2h 3m 4s`, leaving out leading zero units.
pub fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    let mut out = String::new();
    if days > 0 {
        out.push_str(&format!("{days}d "));
    }
    if days > 0 || hours > 0 {
        out.push_str(&format!("{hours}h "));
    }
    if days > 0 || hours > 0 || mins > 0 {
        out.push_str(&format!("{mins}m "));
    }
    out.push_str(&format!("{secs}s"));
    out
}

/// What a secret looks like in a log line.
pub const MASK: &str = "********";

/// Whether a key or word names a secret (password, API key, token, cookie, credentials).
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "pass",
        "secret",
        "token",
        "api_key",
        "apikey",
        "cookie",
        "credential",
        "pwd",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// A maintenance command line as it may be logged or echoed: the password of
/// `crossbar_maintenance create_account` (and anything after it), the value of a
/// `kapps_config set` whose key names a secret, `key=value` words with a secret key, and
/// credentials in URLs are masked.
pub fn redacted(args: &[String]) -> String {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let secret_from = match words.as_slice() {
        ["crossbar_maintenance", "create_account", ..] => 5,
        ["kapps_config", "set", _, key, ..] if is_secret_name(key) => 4,
        _ => usize::MAX,
    };
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i >= secret_from {
                return MASK.to_string();
            }
            if let Some((k, _)) = w.split_once('=')
                && is_secret_name(k)
            {
                return format!("{k}={MASK}");
            }
            if w.contains("://") {
                return redact_url(w);
            }
            w.to_string()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A URL with any `user:password@` removed, for display.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_command_lines() {
        let line = redacted(&args(
            "crossbar_maintenance create_account Acme acme.example.com boss S3cret!pw",
        ));
        assert_eq!(
            line,
            format!("crossbar_maintenance create_account Acme acme.example.com boss {MASK}")
        );
        // A mistyped command (an extra word) still hides everything from the password on.
        let line = redacted(&args("crossbar_maintenance create_account A b c pw extra"));
        assert!(!line.contains("pw") && !line.contains("extra"), "{line}");
        let line = redacted(&args("kapps_config set fax smtp_password hunter2"));
        assert_eq!(line, format!("kapps_config set fax smtp_password {MASK}"));
        let line = redacted(&args("kapps_config set fax max_outbound 4"));
        assert_eq!(line, "kapps_config set fax max_outbound 4");
        let line = redacted(&args("x y api_key=abc url=http://u:p@h/ http://u:p@h/db"));
        assert_eq!(
            line,
            format!("x y api_key={MASK} url=http://h/ http://h/db")
        );
        let e = parse(&args("crossbar_maintenance create_account A b c pw extra")).unwrap_err();
        assert!(!e.contains("pw extra"), "{e}");
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse(&args("faxd_maintenance status")), Ok(Command::Status));
        assert_eq!(parse(&args("faxd_maintenance nodes")), Ok(Command::Nodes));
        assert_eq!(
            parse(&args("kapps_config get fax max_outbound")),
            Ok(Command::ConfigGet {
                category: "fax".into(),
                key: "max_outbound".into()
            })
        );
        assert_eq!(
            parse(&args("kapps_config set fax max_outbound 20")),
            Ok(Command::ConfigSet {
                category: "fax".into(),
                key: "max_outbound".into(),
                value: serde_json::json!(20)
            })
        );
        assert_eq!(
            parse(&args(
                "kapps_config set fax default_smtp_domain fax.example.com"
            )),
            Ok(Command::ConfigSet {
                category: "fax".into(),
                key: "default_smtp_domain".into(),
                value: serde_json::json!("fax.example.com")
            })
        );
        assert_eq!(
            parse(&args(
                "crossbar_maintenance create_account Acme acme.example.com boss pw"
            )),
            Ok(Command::CreateAccount {
                name: "Acme".into(),
                realm: "acme.example.com".into(),
                username: "boss".into(),
                password: "pw".into()
            })
        );
        assert!(parse(&args("crossbar_maintenance create_account Acme")).is_err());
        let err = parse(&args("nope x")).unwrap_err();
        assert!(err.contains("unknown command 'nope x'") && err.contains("kapps_config"));
        assert!(parse(&args("kapps_config set fax key")).is_err());
    }

    #[test]
    fn parses_job_commands() {
        assert_eq!(
            parse(&args("fax_maintenance pending_jobs")),
            Ok(Command::PendingJobs)
        );
        assert_eq!(
            parse(&args("fax_maintenance active_jobs")),
            Ok(Command::ActiveJobs)
        );
        assert_eq!(
            parse(&args("fax_maintenance account_jobs abc")),
            Ok(Command::AccountJobs {
                account: "abc".into(),
                state: JobStatus::Pending
            })
        );
        assert_eq!(
            parse(&args("fax_maintenance faxbox_jobs box failed")),
            Ok(Command::FaxboxJobs {
                faxbox: "box".into(),
                state: JobStatus::Failed
            })
        );
        assert_eq!(
            parse(&args("fax_maintenance update_job j completed")),
            Ok(Command::UpdateJob {
                job: "j".into(),
                state: JobStatus::Completed
            })
        );
        assert!(parse(&args("fax_maintenance update_job j bogus")).is_err());
        assert_eq!(
            parse(&args("fax_maintenance restart_job j")),
            Ok(Command::RestartJob { job: "j".into() })
        );
    }

    fn owner(account: &str, node: &str, expires_ms: i64) -> OwnerRow {
        OwnerRow {
            account_id: account.into(),
            node: node.into(),
            expires_ms,
        }
    }

    fn running(node: &str, job: &str, to: &str) -> RunRow {
        RunRow {
            node: node.into(),
            job_id: job.into(),
            to: to.into(),
        }
    }

    #[test]
    fn nodes_are_listed_with_what_they_own_and_run() {
        let me = "faxd-a@127.0.0.1";
        let members = vec!["faxd-c@127.0.0.1".to_string(), "faxd-b@127.0.0.1".into()];
        let owners = vec![
            owner("acct2", me, 2_000),
            owner("acct1", me, 2_000),
            owner("acct3", "faxd-b@127.0.0.1", 2_000),
            // Not renewed in time: shown apart.
            owner("acct4", "faxd-b@127.0.0.1", 500),
            // Held by a node this one is not linked to.
            owner("acct5", "faxd-d@127.0.0.1", 2_000),
            owner("acct6", "", 0),
        ];
        let runs = vec![
            running(me, "job2", "+15550002"),
            running(me, "job1", "+15550001"),
            running("faxd-e@127.0.0.1", "job3", ""),
        ];
        let queued = vec![
            "acct1".to_string(),
            "acct6".into(),
            "acct7".into(),
            "acct4".into(),
        ];
        // Queues as the process groups show them: acct9 runs on b, whose lease names nobody
        // (a handover under way).
        let queues = vec![
            (me.to_string(), "acct1".to_string()),
            ("faxd-b@127.0.0.1".to_string(), "acct3".to_string()),
            ("faxd-b@127.0.0.1".to_string(), "acct9".to_string()),
        ];
        let out = render_nodes(me, &members, &owners, &queues, &runs, &queued, 1_000);
        assert_eq!(
            out,
            "nodes: 3 (this node faxd-a@127.0.0.1), 2 more not linked\n\
             faxd-a@127.0.0.1 (this node): 2 accounts, 1 queue running, 2 transmissions\n\
             \x20 accounts: acct1, acct2\n\
             \x20 jobs: job1 (+15550001), job2 (+15550002)\n\
             faxd-b@127.0.0.1: 1 account (+1 expired), 2 queues running, 0 transmissions\n\
             \x20 accounts: acct3\n\
             \x20 queues not owned here: acct9\n\
             \x20 expired: acct4\n\
             faxd-c@127.0.0.1: 0 accounts, 0 queues running, 0 transmissions\n\
             faxd-d@127.0.0.1 (not linked): 1 account, 0 queues running, 0 transmissions\n\
             \x20 accounts: acct5\n\
             faxd-e@127.0.0.1 (not linked): 0 accounts, 0 queues running, 1 transmission\n\
             \x20 jobs: job3\n\
             no owner: 2 accounts with queued work\n\
             \x20 accounts: acct6, acct7\n\
             released: 1 account\n"
        );

        // A single node (no members), nothing queued or running.
        assert_eq!(
            render_nodes(me, &[], &[], &[], &[], &[], 0),
            "nodes: 1 (this node faxd-a@127.0.0.1)\n\
             faxd-a@127.0.0.1 (this node): 0 accounts, 0 queues running, 0 transmissions\n"
        );
    }

    #[test]
    fn fifty_accounts_wrap_to_readable_lines() {
        let me = "faxd-a@127.0.0.1";
        let ids: Vec<String> = (0..50).map(|i| format!("{i:032x}")).collect();
        let owners: Vec<OwnerRow> = ids.iter().map(|a| owner(a, me, i64::MAX)).collect();
        let out = render_nodes(me, &[], &owners, &[], &[], &[], 0);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[1],
            "faxd-a@127.0.0.1 (this node): 50 accounts, 0 queues running, 0 transmissions"
        );
        assert!(lines[2].starts_with("  accounts: 00000000000000000000000000000000, "));
        assert!(lines.iter().all(|l| l.len() <= 100), "{out}");
        assert!(
            lines[3..].iter().all(|l| l.starts_with(&" ".repeat(12))),
            "{out}"
        );
        // Every id once, in order, each followed by a comma but the last.
        let listed: Vec<&str> = out
            .lines()
            .skip(2)
            .flat_map(|l| l.trim_start_matches("  accounts:").split_whitespace())
            .collect();
        let want: Vec<String> = ids
            .iter()
            .enumerate()
            .map(|(i, a)| if i < 49 { format!("{a},") } else { a.clone() })
            .collect();
        assert_eq!(listed, want);
        assert_eq!(
            OwnerRow::from_doc(&serde_json::json!({
                "_id": "faxd_owner_abc", "pvt_type": "outbound_owner", "node": "n1",
                "expires_ms": 7})),
            Some(owner("abc", "n1", 7))
        );
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["Job", "To"],
            &[
                vec!["a".into(), "+1".into()],
                vec!["long-id".into(), "+2".into()],
            ],
        );
        assert_eq!(t, "Job      To\na        +1\nlong-id  +2\n");
        assert_eq!(
            gregorian_date(faxd::time::GREGORIAN_UNIX_OFFSET),
            "1970-01-01 00:00:00"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(uptime(Duration::from_secs(5)), "5s");
        assert_eq!(uptime(Duration::from_secs(3_725)), "1h 2m 5s");
        assert_eq!(uptime(Duration::from_secs(90_061)), "1d 1h 1m 1s");
        assert_eq!(
            redact_url("http://admin:pw@db:5984"),
            "http://db:5984".to_string()
        );
        assert_eq!(redact_url("http://db:5984"), "http://db:5984");
    }
}
