//! Identifiers: validated newtypes for account ids and document ids, new random ids, and
//! Kazoo's database names (account databases and monthly MODBs).

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Errors from parsing identifiers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("invalid account id '{0}': expected 32 lowercase hex characters")]
    Account(String),
    #[error("invalid database name '{0}'")]
    DbName(String),
    #[error("invalid month '{0}': expected YYYYMM")]
    Month(String),
}

/// Longest document id looked up; faxd's own ids are far shorter, and a longer one (from a
/// URL or a mail address) is refused as unknown without troubling the store.
pub const MAX_DOC_ID: usize = 255;

/// 32 random lowercase hex characters, the shape of every generated Kazoo id.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An account id: 32 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

/// Length of an account database name: `account/xx/yy/` and the id's other 28 digits.
const DB_NAME_LEN: usize = 42;

impl AccountId {
    /// Parses and validates an account id. Upper-case hex is accepted and lowered, as Kazoo
    /// does when it formats account ids.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let lower = s.to_ascii_lowercase();
        if is_hex32(&lower) {
            Ok(Self(lower))
        } else {
            Err(IdError::Account(s.to_string()))
        }
    }

    /// A fresh random account id.
    pub fn generate() -> Self {
        Self(new_id())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The account database name: `account/xx/yy/rest` (unencoded; the CouchDB client encodes
    /// it once on the wire).
    pub fn db_name(&self) -> String {
        let mut name = String::with_capacity(DB_NAME_LEN + 7);
        self.push_db_name(&mut name);
        name
    }

    /// Appends [`AccountId::db_name`] to `out` (names are built on every store call: one
    /// allocation, no formatting machinery).
    fn push_db_name(&self, out: &mut String) {
        out.push_str("account/");
        out.push_str(&self.0[0..2]);
        out.push('/');
        out.push_str(&self.0[2..4]);
        out.push('/');
        out.push_str(&self.0[4..]);
    }
}

impl TryFrom<String> for AccountId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<AccountId> for String {
    fn from(id: AccountId) -> String {
        id.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AccountId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

/// A calendar month, the suffix of a MODB (`YYYYMM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct YearMonth {
    pub year: i32,
    pub month: u32,
}

impl YearMonth {
    pub fn new(year: i32, month: u32) -> Result<Self, IdError> {
        if (1..=12).contains(&month) && (1970..=9999).contains(&year) {
            Ok(Self { year, month })
        } else {
            Err(IdError::Month(format!("{year:04}{month:02}")))
        }
    }

    /// The month (UTC) that contains a moment given in gregorian seconds.
    pub fn from_gregorian(secs: i64) -> Self {
        let unix = secs - crate::time::GREGORIAN_UNIX_OFFSET;
        let dt = Utc.timestamp_opt(unix, 0).single().unwrap_or_default();
        Self {
            year: dt.year(),
            month: dt.month(),
        }
    }

    /// The current month (UTC).
    pub fn now() -> Self {
        Self::from_gregorian(crate::time::now_gregorian())
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::Month(s.to_string()));
        }
        let year = s[0..4].parse().map_err(|_| IdError::Month(s.to_string()))?;
        let month = s[4..6].parse().map_err(|_| IdError::Month(s.to_string()))?;
        Self::new(year, month).map_err(|_| IdError::Month(s.to_string()))
    }

    pub fn prev(self) -> Self {
        if self.month == 1 {
            Self {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Self {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// First second of the month, in gregorian seconds.
    pub fn start_gregorian(self) -> i64 {
        let date = NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or_default();
        date.and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
            .timestamp()
            + crate::time::GREGORIAN_UNIX_OFFSET
    }

    /// Appends `YYYYMM` to `out` (as [`fmt::Display`], without its machinery).
    fn push_digits(&self, out: &mut String) {
        if (0..=9999).contains(&self.year) && (1..=12).contains(&self.month) {
            let (y, m) = (self.year as u32, self.month);
            for d in [y / 1000, y / 100 % 10, y / 10 % 10, y % 10, m / 10, m % 10] {
                out.push(char::from(b'0' + d as u8));
            }
        } else {
            use fmt::Write as _;
            let _ = write!(out, "{self}");
        }
    }
}

impl fmt::Display for YearMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}{:02}", self.year, self.month)
    }
}

/// A logical database, named as Kazoo names it in CouchDB.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Db {
    /// `faxes`: the outbound queue and the faxbox copies.
    Faxes,
    /// `accounts`: one summary document per account.
    Accounts,
    /// `system_config`: one document per configuration category.
    SystemConfig,
    /// `account/xx/yy/rest`: an account's own database.
    Account(AccountId),
    /// `account/xx/yy/rest-YYYYMM`: an account's monthly database.
    Modb(AccountId, YearMonth),
}

impl Db {
    /// The database name (unencoded).
    pub fn name(&self) -> String {
        match self {
            Db::Faxes => "faxes".into(),
            Db::Accounts => "accounts".into(),
            Db::SystemConfig => "system_config".into(),
            Db::Account(a) => a.db_name(),
            Db::Modb(a, m) => {
                let mut name = String::with_capacity(DB_NAME_LEN + 7);
                a.push_db_name(&mut name);
                name.push('-');
                m.push_digits(&mut name);
                name
            }
        }
    }

    /// Parses a database name back into a [`Db`]; accepts the URL-encoded form too.
    pub fn parse(name: &str) -> Result<Self, IdError> {
        let name = name.replace("%2F", "/").replace("%2f", "/");
        match name.as_str() {
            "faxes" => return Ok(Db::Faxes),
            "accounts" => return Ok(Db::Accounts),
            "system_config" => return Ok(Db::SystemConfig),
            _ => {}
        }
        let bad = || IdError::DbName(name.clone());
        let rest = name.strip_prefix("account/").ok_or_else(bad)?;
        let (account, month) = match rest.split_once('-') {
            Some((a, m)) => (a, Some(YearMonth::parse(m).map_err(|_| bad())?)),
            None => (rest, None),
        };
        let parts: Vec<&str> = account.split('/').collect();
        if parts.len() != 3 || parts[0].len() != 2 || parts[1].len() != 2 {
            return Err(bad());
        }
        let id = AccountId::parse(&parts.concat()).map_err(|_| bad())?;
        Ok(match month {
            Some(m) => Db::Modb(id, m),
            None => Db::Account(id),
        })
    }

    /// The account a database belongs to, if any.
    pub fn account(&self) -> Option<&AccountId> {
        match self {
            Db::Account(a) | Db::Modb(a, _) => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The MODB document id prefix `YYYYMM-` for a month.
pub fn modb_doc_id(month: YearMonth, id: &str) -> String {
    format!("{month}-{id}")
}

/// Where an outbound job of `account` created at `created` (gregorian seconds) ends: the
/// account MODB of its creation month and its id there (`YYYYMM-<id>`).
pub fn outbox_location(account: AccountId, created: i64, id: &str) -> (Db, String) {
    let month = YearMonth::from_gregorian(created);
    (Db::Modb(account, month), modb_doc_id(month, id))
}

/// Splits a `YYYYMM-<id>` document id into its month and the rest.
pub fn split_modb_doc_id(id: &str) -> Option<(YearMonth, &str)> {
    let (m, rest) = id.split_once('-')?;
    Some((YearMonth::parse(m).ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_db_names_follow_kazoo() {
        let a = AccountId::parse("0123456789ABCDEF0123456789abcdef").unwrap();
        assert_eq!(a.as_str(), "0123456789abcdef0123456789abcdef");
        assert_eq!(a.db_name(), "account/01/23/456789abcdef0123456789abcdef");
        let m = YearMonth::new(2026, 11).unwrap();
        let modb = Db::Modb(a.clone(), m);
        assert_eq!(
            modb.name(),
            "account/01/23/456789abcdef0123456789abcdef-202611"
        );
        assert_eq!(Db::parse(&modb.name()).unwrap(), modb);
        for (year, month) in [(1970, 1), (2009, 10), (2026, 12), (9999, 9)] {
            let m = YearMonth::new(year, month).unwrap();
            let name = Db::Modb(a.clone(), m).name();
            assert_eq!(name, format!("{}-{m}", a.db_name()));
            assert_eq!(&name[name.len() - 6..], format!("{year:04}{month:02}"));
        }
        assert_eq!(
            Db::parse("account%2F01%2F23%2F456789abcdef0123456789abcdef").unwrap(),
            Db::Account(a)
        );
        assert_eq!(Db::parse("faxes").unwrap(), Db::Faxes);
        assert!(Db::parse("account/01/23/zz").is_err());
        assert!(Db::parse("other").is_err());
    }

    #[test]
    fn account_ids_are_validated() {
        assert!(AccountId::parse("abc").is_err());
        assert!(AccountId::parse("g123456789abcdef0123456789abcdef").is_err());
        assert_eq!(new_id().len(), 32);
        assert_ne!(new_id(), new_id());
    }

    #[test]
    fn months_round_trip() {
        let m = YearMonth::parse("202601").unwrap();
        assert_eq!(m.prev().to_string(), "202512");
        assert_eq!(YearMonth::from_gregorian(m.start_gregorian()), m);
        assert_eq!(YearMonth::from_gregorian(m.start_gregorian() - 1), m.prev());
        assert!(YearMonth::parse("202613").is_err());
        let (month, rest) = split_modb_doc_id("202611-abc").unwrap();
        assert_eq!((month.to_string().as_str(), rest), ("202611", "abc"));
    }
}
