//! Release of an attempt (Kazoo's `fax_worker:release_job`, spec §3.5), as pure functions:
//! the `tx_result` of an outcome, the reschedule rules of `system_config.fax.reschedule`, and
//! the decision (next status, `retry_after`, `retries`, matched rule, next attempt's options).
//!
//! Differences from Kazoo (spec §9.2): `tx_result` has no duplicate keys (SIP code as
//! `result_code`, hangup cause as `result_cause`, T.30 as `fax_result_code`/`fax_result_text`,
//! plus `started`/`finished` in unix ms); a matching rule changes `retries` only when it says
//! so (`new-retry-count` or `retries`); a rule may step the next attempt down with
//! `"then": {"ecm": false, "max_rate": 9600, "t38": false}`. Rules are checked in key order
//! of the stored object as read (alphabetical), the first match wins.

use serde_json::{Map, Value, json};

use super::job::{Job, LEASE_GEN, options_json};
use crate::gateway::{FaxResult, TxOptions};
use crate::model::JobStatus;

/// `result_cause` of an attempt cut short by a dead worker or node.
pub const TERMINATED: &str = "PROCESS_TERMINATED";

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The call ran and the media engine reported a result (success or not).
    Call(FaxResult),
    /// No result from a media engine: timeout, refused originate, bad document, invalid
    /// number, a crashed worker or a dead node. `sip_code` and `cause` as in spec §2.3.
    Failure {
        sip_code: u16,
        cause: String,
        text: String,
    },
}

impl Outcome {
    /// A stage timeout (`"fax job timed out - <stage>"`, code 500).
    pub fn timeout(stage: &str) -> Self {
        Outcome::Failure {
            sip_code: 500,
            cause: "JOB_TIMEOUT".into(),
            text: format!("fax job timed out - {stage}"),
        }
    }

    /// The worker or its node died during the attempt.
    pub fn terminated(why: &str) -> Self {
        Outcome::Failure {
            sip_code: 500,
            cause: TERMINATED.into(),
            text: format!("process terminated ({why}). please contact your support for details"),
        }
    }

    pub fn success(&self) -> bool {
        matches!(self, Outcome::Call(r) if r.success)
    }
}

/// The fields of a call's result shared by `tx_result` and `rx_result`; `result_text` is
/// the caller's summary of the call. `fax_result_text` is kept as the engine gave it, even
/// empty; the station ids and the resolution are left out when the engine had none (a call
/// that never reached T.30), as Kazoo leaves out what FreeSWITCH did not set.
pub fn call_fields(m: &mut Map<String, Value>, r: &FaxResult, result_text: &str) {
    m.insert("result_code".into(), json!(r.sip_code));
    m.insert("result_cause".into(), json!(r.hangup_cause));
    m.insert("result_text".into(), json!(result_text));
    m.insert("fax_result_code".into(), json!(r.fax_result_code));
    m.insert("fax_result_text".into(), json!(r.fax_result_text));
    m.insert("transferred_pages".into(), json!(r.transferred_pages));
    m.insert("total_pages".into(), json!(r.total_pages));
    m.insert("transfer_rate".into(), json!(r.transfer_rate));
    m.insert("ecm_used".into(), json!(r.ecm_used));
    m.insert("t38_used".into(), json!(r.t38_used));
    for (key, value) in [
        ("remote_station_id", &r.remote_station_id),
        ("local_station_id", &r.local_station_id),
        ("image_resolution", &r.image_resolution),
    ] {
        if !value.is_empty() {
            m.insert(key.into(), json!(value));
        }
    }
    m.insert("bad_rows".into(), json!(r.bad_rows));
    m.insert("longest_bad_row_run".into(), json!(r.longest_bad_row_run));
}

/// The `result_text` of a transmission: the T.30 text, or, for a call that never got that
/// far (busy, no answer, rejected), its hangup cause, which is what a user needs to read.
pub fn call_text(r: &FaxResult) -> &str {
    if r.fax_result_text.is_empty() {
        &r.hangup_cause
    } else {
        &r.fax_result_text
    }
}

/// The `tx_result` object of an attempt.
pub fn tx_result(
    outcome: &Outcome,
    started_ms: i64,
    finished_ms: i64,
    created_gregorian: i64,
    options: &TxOptions,
) -> Map<String, Value> {
    let elapsed = (crate::time::now_gregorian() - created_gregorian).max(0);
    let mut m = Map::new();
    m.insert("success".into(), json!(outcome.success()));
    m.insert("started".into(), json!(started_ms));
    m.insert("finished".into(), json!(finished_ms));
    m.insert("time_elapsed".into(), json!(elapsed));
    match outcome {
        Outcome::Call(r) => call_fields(&mut m, r, call_text(r)),
        Outcome::Failure {
            sip_code,
            cause,
            text,
        } => {
            m.insert("result_code".into(), json!(sip_code));
            m.insert("result_cause".into(), json!(cause));
            m.insert("result_text".into(), json!(text));
            m.insert("transferred_pages".into(), json!(0));
        }
    }
    m.insert("options".into(), options_json(options));
    m
}

/// Step-down of the next attempt's options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepDown {
    pub ecm: Option<bool>,
    pub max_rate: Option<u32>,
    pub t38: Option<bool>,
}

impl StepDown {
    pub fn apply(&self, o: &mut TxOptions) {
        if let Some(v) = self.ecm {
            o.ecm = v;
        }
        if let Some(v) = self.max_rate {
            o.max_rate = o.max_rate.min(v);
        }
        if let Some(v) = self.t38 {
            o.t38 = v;
        }
    }
}

/// One named reschedule rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    /// Matches only this attempt number (after the increment); `None` = any.
    pub attempt: Option<u32>,
    pub compare_field: String,
    pub compare_values: Vec<Value>,
    pub retry_after: Option<u64>,
    /// New total attempts (`new-retry-count`, else `retries`); `None` keeps the job's.
    pub new_retries: Option<u32>,
    pub then: StepDown,
}

/// Parses `system_config.fax.reschedule`. Entries that are not objects are skipped (and
/// reported), so one bad rule does not disable the others.
pub fn parse_rules(reschedule: &Map<String, Value>, default_field: &str) -> Vec<Rule> {
    let mut out = Vec::new();
    for (name, r) in reschedule {
        let Some(r) = r.as_object() else {
            tracing::warn!(rule = %name, "reschedule rule is not an object; ignored");
            continue;
        };
        let u32_of = |k: &str| {
            r.get(k)
                .and_then(Value::as_u64)
                .map(|v| v.min(u32::MAX as u64) as u32)
        };
        let values = match (r.get("compare-values"), r.get("compare-value")) {
            (Some(Value::Array(v)), _) => v.clone(),
            (Some(v), _) | (None, Some(v)) => vec![v.clone()],
            (None, None) => vec![],
        };
        let then = r.get("then").and_then(Value::as_object);
        let then = StepDown {
            ecm: then.and_then(|t| t.get("ecm")).and_then(Value::as_bool),
            max_rate: then
                .and_then(|t| t.get("max_rate"))
                .and_then(Value::as_u64)
                .map(|v| v.min(u32::MAX as u64) as u32),
            t38: then.and_then(|t| t.get("t38")).and_then(Value::as_bool),
        };
        out.push(Rule {
            name: name.clone(),
            attempt: u32_of("attempt"),
            compare_field: r
                .get("compare-field")
                .and_then(Value::as_str)
                .unwrap_or(default_field)
                .to_string(),
            compare_values: values,
            retry_after: r.get("retry-after").and_then(Value::as_u64),
            new_retries: u32_of("new-retry-count").or_else(|| u32_of("retries")),
            then,
        });
    }
    out
}

/// What release decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: JobStatus,
    pub attempts: u32,
    pub retries: u32,
    /// Seconds after `pvt_modified = now` before the next attempt.
    pub retry_after: u64,
    pub rule: Option<String>,
    /// Options of the next attempt.
    pub options: TxOptions,
}

/// Decides the release of an attempt of `job` whose result is `tx_result`.
pub fn decide(
    job: &Job,
    tx_result: &Map<String, Value>,
    success: bool,
    rules: &[Rule],
    default_retry_period: u64,
) -> Decision {
    let attempts = job.attempts.saturating_add(1);
    let mut d = Decision {
        status: JobStatus::Pending,
        attempts,
        retries: job.retries,
        retry_after: default_retry_period,
        rule: None,
        options: job.options.clone(),
    };
    if !success
        && let Some(rule) = rules.iter().find(|r| {
            r.attempt.is_none_or(|a| a == attempts)
                && tx_result
                    .get(&r.compare_field)
                    .is_some_and(|v| r.compare_values.contains(v))
        })
    {
        d.retry_after = rule.retry_after.unwrap_or(default_retry_period);
        if let Some(n) = rule.new_retries {
            d.retries = n;
        }
        d.rule = Some(rule.name.clone());
        rule.then.apply(&mut d.options);
    }
    d.status = if success {
        JobStatus::Completed
    } else if d.retries.saturating_sub(attempts) >= 1 {
        JobStatus::Pending
    } else {
        JobStatus::Failed
    };
    d
}

/// Writes a decision and its `tx_result` into the job document (which keeps its `_rev`).
pub fn apply(doc: &mut Value, d: &Decision, tx_result: Map<String, Value>, now_gregorian: i64) {
    let Some(obj) = doc.as_object_mut() else {
        return;
    };
    obj.insert("attempts".into(), json!(d.attempts));
    obj.insert("retries".into(), json!(d.retries));
    obj.insert("tx_result".into(), Value::Object(tx_result));
    obj.insert("pvt_modified".into(), json!(now_gregorian));
    obj.insert("retry_after".into(), json!(d.retry_after));
    obj.insert("pvt_job_status".into(), json!(d.status.as_str()));
    obj.insert("tx_options".into(), options_json(&d.options));
    match &d.rule {
        Some(r) => obj.insert("reschedule_rule".into(), json!(r)),
        None => obj.remove("reschedule_rule"),
    };
    for k in ["pvt_queue", "pvt_lease", "pvt_heartbeat", LEASE_GEN] {
        obj.remove(k);
    }
    if d.status == JobStatus::Completed {
        obj.insert("pvt_delivered_date".into(), json!(now_gregorian));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AccountId;

    fn job(attempts: u32, retries: u32) -> Job {
        let a = AccountId::generate();
        Job::from_doc(&json!({"_id": "j", "_rev": "1-x", "pvt_type": "fax",
            "pvt_account_id": a.as_str(), "pvt_job_status": "processing",
            "attempts": attempts, "retries": retries}))
        .unwrap()
    }

    fn busy() -> Outcome {
        Outcome::Call(FaxResult {
            success: false,
            hangup_cause: "USER_BUSY".into(),
            sip_code: 486,
            ..Default::default()
        })
    }

    fn rules() -> Vec<Rule> {
        let cfg = json!({
            "busy": {"attempt": "any", "compare-field": "result_cause",
                     "compare-values": ["USER_BUSY", "NO_ANSWER"], "retry-after": 1},
            "slow_down": {"attempt": 1, "compare-field": "fax_result_code",
                          "compare-values": [49], "retry-after": 2,
                          "then": {"ecm": false, "max_rate": 9600}},
            "sip503": {"compare-field": "result_code", "compare-values": [503],
                       "retry-after": 60, "new-retry-count": 5}
        });
        parse_rules(cfg.as_object().unwrap(), "result_cause")
    }

    #[test]
    fn tx_result_has_no_duplicate_meanings() {
        let r = tx_result(&busy(), 1, 2, 0, &TxOptions::default());
        assert_eq!(r["result_code"], 486);
        assert_eq!(r["result_cause"], "USER_BUSY");
        assert_eq!(r["started"], 1);
        assert_eq!(r["finished"], 2);
        assert_eq!(r["success"], false);
        assert_eq!(r["fax_result_code"], 0);
        // Never answered: the cause is the text; the engine's own (empty) text is kept.
        assert_eq!(r["result_text"], "USER_BUSY");
        assert_eq!(r["fax_result_text"], "");
        assert!(r.get("remote_station_id").is_none());
        assert!(r.get("image_resolution").is_none());
        let t = tx_result(&Outcome::timeout("send"), 1, 2, 0, &TxOptions::default());
        assert_eq!(t["result_text"], "fax job timed out - send");
        assert_eq!(t["result_code"], 500);
    }

    #[test]
    fn busy_with_three_retries_is_retried_then_failed() {
        let rules = rules();
        let mut j = job(0, 3);
        let mut seen = vec![];
        loop {
            let r = tx_result(&busy(), 0, 0, 0, &j.options);
            let d = decide(&j, &r, false, &rules, 300);
            assert_eq!(d.rule.as_deref(), Some("busy"));
            assert_eq!(d.retry_after, 1);
            assert_eq!(d.retries, 3, "a rule without new-retry-count keeps retries");
            seen.push(d.status);
            j.attempts = d.attempts;
            if d.status != JobStatus::Pending {
                break;
            }
        }
        assert_eq!(
            seen,
            [JobStatus::Pending, JobStatus::Pending, JobStatus::Failed]
        );
    }

    #[test]
    fn rules_match_attempt_field_and_step_down() {
        let rules = rules();
        let hung = Outcome::Call(FaxResult {
            hangup_cause: "NORMAL_CLEARING".into(),
            sip_code: 200,
            fax_result_code: 49,
            ..Default::default()
        });
        let j = job(0, 3);
        let d = decide(
            &j,
            &tx_result(&hung, 0, 0, 0, &j.options),
            false,
            &rules,
            300,
        );
        assert_eq!(d.rule.as_deref(), Some("slow_down"));
        assert!(!d.options.ecm);
        assert_eq!(d.options.max_rate, 9600);
        // Second attempt: the attempt-1 rule no longer matches; default period.
        let j2 = job(1, 3);
        let d = decide(
            &j2,
            &tx_result(&hung, 0, 0, 0, &j2.options),
            false,
            &rules,
            300,
        );
        assert_eq!(d.rule, None);
        assert_eq!(d.retry_after, 300);
        assert!(d.options.ecm);
        // SIP code compared as an integer; new-retry-count applied.
        let refused = Outcome::Failure {
            sip_code: 503,
            cause: "X".into(),
            text: "t".into(),
        };
        let d = decide(
            &j,
            &tx_result(&refused, 0, 0, 0, &j.options),
            false,
            &rules,
            300,
        );
        assert_eq!(
            (d.rule.as_deref(), d.retries, d.retry_after),
            (Some("sip503"), 5, 60)
        );
    }

    #[test]
    fn success_completes_and_default_retries_is_one_attempt() {
        let ok = Outcome::Call(FaxResult {
            success: true,
            sip_code: 200,
            ..Default::default()
        });
        let j = job(0, 1);
        let r = tx_result(&ok, 0, 0, 0, &j.options);
        let d = decide(&j, &r, true, &rules(), 300);
        assert_eq!(d.status, JobStatus::Completed);
        let d = decide(
            &j,
            &tx_result(&busy(), 0, 0, 0, &j.options),
            false,
            &[],
            300,
        );
        assert_eq!(d.status, JobStatus::Failed);
        let mut doc = json!({"_id": "j", "pvt_queue": "q", "pvt_lease": "l"});
        apply(&mut doc, &d, r, 42);
        assert_eq!(doc["pvt_job_status"], "failed");
        assert!(doc.get("pvt_lease").is_none());
        assert_eq!(doc["attempts"], 1);
    }
}
