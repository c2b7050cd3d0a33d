//! The fax calls a node is receiving right now, for `GET /faxes/incoming`: each fax_request
//! enters its call when it answers, updates it as pages arrive and removes it when the call
//! ends. Also the count an account's inbound limit is checked against.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::ids::AccountId;

/// One call being received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Incoming {
    /// The call id.
    pub id: String,
    #[serde(skip)]
    pub account: Option<AccountId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faxbox_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    pub from_number: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub from_name: String,
    pub to_number: String,
    /// `answered`, `negotiated` or `receiving`.
    pub status: String,
    /// Pages received so far.
    pub page: u32,
    /// Modem rate in bit/s once negotiated.
    #[serde(skip_serializing_if = "is_zero")]
    pub transfer_rate: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_station_id: String,
    /// When the call was answered, gregorian seconds.
    pub created: i64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The registry (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct IncomingCalls(Arc<Mutex<HashMap<String, Incoming>>>);

impl IncomingCalls {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Incoming>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters a call if its account has fewer than `limit` calls here (0: no limit);
    /// `false` when the account is at its limit.
    pub fn enter(&self, call: Incoming, limit: u32) -> bool {
        let mut map = self.lock();
        if limit > 0 {
            let n = map.values().filter(|c| c.account == call.account).count();
            if n >= limit as usize {
                return false;
            }
        }
        map.insert(call.id.clone(), call);
        true
    }

    /// Changes a call's entry.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut Incoming)) {
        if let Some(c) = self.lock().get_mut(id) {
            f(c);
        }
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// An account's calls, oldest first.
    pub fn of_account(&self, account: &AccountId) -> Vec<Incoming> {
        let mut v: Vec<Incoming> = self
            .lock()
            .values()
            .filter(|c| c.account.as_ref() == Some(account))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, account: &AccountId) -> Incoming {
        Incoming {
            id: id.into(),
            account: Some(account.clone()),
            faxbox_id: None,
            owner_id: None,
            from_number: "+15550100".into(),
            from_name: String::new(),
            to_number: "+15550199".into(),
            status: "answered".into(),
            page: 0,
            transfer_rate: 0,
            remote_station_id: String::new(),
            created: 1,
        }
    }

    #[test]
    fn an_account_at_its_limit_gets_no_more_calls() {
        let a = AccountId::parse("0123456789abcdef0123456789abcdef").expect("id");
        let b = AccountId::parse("fedcba9876543210fedcba9876543210").expect("id");
        let reg = IncomingCalls::default();
        assert!(reg.enter(call("c1", &a), 2));
        assert!(reg.enter(call("c2", &a), 2));
        assert!(!reg.enter(call("c3", &a), 2));
        assert!(reg.enter(call("c4", &b), 2));
        assert!(reg.enter(call("c5", &a), 0));
        reg.update("c1", |c| c.page = 3);
        assert_eq!(reg.of_account(&a)[0].page, 3);
        reg.remove("c1");
        assert_eq!(reg.of_account(&a).len(), 2);
        assert_eq!(reg.of_account(&b).len(), 1);
    }
}
