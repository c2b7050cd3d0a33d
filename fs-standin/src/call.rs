//! Calls: the channel state of each leg (its header values and variables), the events it
//! writes in the orders a real FreeSWITCH writes them (spec §3.7), and the fax itself — one
//! spandsp session from faxd's loopback engine per answered call.
//!
//! An `originate` is the A leg (txfax): its far end is a simulated fax machine chosen by the
//! number, or faxd itself when the number is a faxd number (the B leg, see
//! [`socket`](crate::socket)).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use faxd::gateway::loopback::pstn::{self, Machine, Route};
use faxd::gateway::loopback::session::{self, Party, Session, Transport};
use faxd::gateway::{FaxEvent, FaxResult};
use tokio::sync::{mpsc, oneshot};

use crate::socket::{self, BSpec, ToA, ToB};
use crate::templates::{self, Fill, Kind};
use crate::vars::{self, Originate};
use crate::{BusItem, ChannelHandle, Shared};

/// How long a sender whose fax is done waits for the receiving leg to hang up before it hangs
/// up itself.
const B_HANGUP_GRACE: Duration = Duration::from_secs(5);

/// An `originate` as the stand-in received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginateRecord {
    /// `Job-UUID` of the `bgapi` (empty for `api originate`).
    pub job_uuid: String,
    /// The A leg's uuid (`origination_uuid`, else a new one).
    pub uuid: String,
    /// The dial string after the variable blocks.
    pub dial: String,
    /// The number dialled (see [`Originate::number`]).
    pub number: String,
    /// Every variable of the `{…}`, `<…>` and `[…]` blocks, in order, unescaped.
    pub vars: Vec<(String, String)>,
    pub app: String,
    pub app_arg: String,
}

/// How a simulated carrier call ([`StandIn::place_inbound_call`](crate::StandIn)) sends.
#[derive(Clone, Debug)]
pub struct InboundCallOptions {
    /// The sender's station id (TSI); empty: the calling number.
    pub ident: String,
    /// Page header line drawn by the sender; empty: none.
    pub header: String,
    pub ecm: bool,
    /// Ring time before the call gives up (`NO_ANSWER`).
    pub ring_timeout: Duration,
    /// `From` display name (`Caller-Caller-ID-Name`).
    pub from_name: String,
}

impl Default for InboundCallOptions {
    fn default() -> Self {
        Self {
            ident: String::new(),
            header: String::new(),
            ecm: true,
            ring_timeout: Duration::from_secs(60),
            from_name: String::new(),
        }
    }
}

/// The end of a simulated carrier call, as its sender saw it.
#[derive(Clone, Debug)]
pub struct InboundCallOutcome {
    /// The B leg's (faxd's channel's) uuid, when the socket got that far.
    pub uuid: Option<String>,
    /// The sender's result (`hangup_cause` set when the call was never answered).
    pub result: FaxResult,
}

/// One leg's state: header values, variables in the order they were set, `{…}` variables.
pub(crate) struct Leg {
    pub uuid: String,
    pub channel: HashMap<String, String>,
    pub vars: Vec<(String, String)>,
    pub originate: Vec<(String, String)>,
    pub created_us: i64,
    pub answered_us: i64,
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Leg {
    /// A leg with its caller profile.
    pub fn new(
        uuid: &str,
        channel_name: &str,
        cid_number: &str,
        cid_name: &str,
        destination: &str,
        originate: Vec<(String, String)>,
    ) -> Leg {
        let created = now_us();
        let mut channel = HashMap::new();
        let mut put = |k: &str, v: &str| {
            channel.insert(k.to_string(), v.to_string());
        };
        for p in ["Caller-", "Channel-"] {
            put(&format!("{p}Caller-ID-Number"), cid_number);
            put(&format!("{p}Caller-ID-Name"), cid_name);
            put(&format!("{p}Orig-Caller-ID-Name"), cid_name);
            put(&format!("{p}Username"), cid_number);
            put(&format!("{p}Orig-Caller-ID-Number"), cid_number);
            put(&format!("{p}ANI"), cid_number);
            put(&format!("{p}Destination-Number"), destination);
            put(&format!("{p}Callee-ID-Number"), destination);
            put(&format!("{p}Unique-ID"), uuid);
            put(&format!("{p}Channel-Name"), channel_name);
            put(&format!("{p}Profile-Created-Time"), &created.to_string());
            put(&format!("{p}Channel-Created-Time"), &created.to_string());
            put(&format!("{p}Channel-Answered-Time"), "0");
            put(&format!("{p}Channel-Hangup-Time"), "0");
        }
        put("Channel-Name", channel_name);
        put("Unique-ID", uuid);
        put("Channel-Call-UUID", uuid);
        let mut leg = Leg {
            uuid: uuid.to_string(),
            channel,
            vars: Vec::new(),
            originate,
            created_us: created,
            answered_us: 0,
        };
        leg.set("uuid", uuid);
        leg.set("call_uuid", uuid);
        leg.set("channel_name", channel_name);
        leg
    }

    /// Sets a channel variable (kept at its first position, as FreeSWITCH's list does).
    pub fn set(&mut self, name: &str, value: &str) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.vars.push((name.to_string(), value.to_string())),
        }
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .or_else(|| self.originate.iter().rev().find(|(n, _)| n == name))
            .map(|(_, v)| v.as_str())
    }

    pub fn mark_answered(&mut self) {
        self.answered_us = now_us();
        let t = self.answered_us.to_string();
        for p in ["Caller-", "Channel-"] {
            self.channel
                .insert(format!("{p}Channel-Answered-Time"), t.clone());
        }
        self.set("endpoint_disposition", "ANSWER");
        self.channel
            .insert("Answer-State".into(), "answered".into());
        self.channel
            .insert("Channel-Call-State".into(), "ACTIVE".into());
    }

    /// The channel hangs up: its events carry the cause from now on.
    pub fn begin_hangup(&mut self, cause: &str) {
        if !self.channel.contains_key("Hangup-Cause") {
            self.channel
                .insert("Hangup-Cause".into(), cause.to_string());
        }
        self.channel.insert("Answer-State".into(), "hangup".into());
    }

    /// Sets the variables FreeSWITCH adds at hang-up (cause, stamps, durations).
    pub fn mark_hangup(&mut self, cause: &str) {
        self.begin_hangup(cause);
        let end = now_us();
        for p in ["Caller-", "Channel-"] {
            self.channel
                .insert(format!("{p}Channel-Hangup-Time"), end.to_string());
        }
        let stamp = |us: i64| {
            chrono::DateTime::from_timestamp_micros(us)
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string()
                })
                .unwrap_or_default()
        };
        let cid = format!(
            "\"{}\" <{}>",
            self.channel
                .get("Caller-Caller-ID-Name")
                .map(String::as_str)
                .unwrap_or(""),
            self.channel
                .get("Caller-Caller-ID-Number")
                .map(String::as_str)
                .unwrap_or("")
        );
        self.set("caller_id", &cid);
        self.set("hangup_cause", cause);
        self.set("hangup_cause_q850", &q850(cause).to_string());
        self.set("start_stamp", &stamp(self.created_us));
        self.set("profile_start_stamp", &stamp(self.created_us));
        if self.answered_us > 0 {
            self.set("answer_stamp", &stamp(self.answered_us));
        }
        self.set("end_stamp", &stamp(end));
        let start = self.created_us;
        let ans = self.answered_us;
        for (n, v) in [
            ("start_epoch", start / 1_000_000),
            ("start_uepoch", start),
            ("profile_start_epoch", start / 1_000_000),
            ("profile_start_uepoch", start),
            ("answer_epoch", ans / 1_000_000),
            ("answer_uepoch", ans),
            ("end_epoch", end / 1_000_000),
            ("end_uepoch", end),
            ("duration", (end - start) / 1_000_000),
            ("billsec", if ans > 0 { (end - ans) / 1_000_000 } else { 0 }),
            ("mduration", (end - start) / 1000),
            ("billmsec", if ans > 0 { (end - ans) / 1000 } else { 0 }),
            ("uduration", end - start),
            ("billusec", if ans > 0 { end - ans } else { 0 }),
            (
                "flow_billsec",
                if ans > 0 { (end - ans) / 1_000_000 } else { 0 },
            ),
            (
                "flow_billmsec",
                if ans > 0 { (end - ans) / 1000 } else { 0 },
            ),
            ("flow_billusec", if ans > 0 { end - ans } else { 0 }),
            (
                "answersec",
                if ans > 0 {
                    (ans - start) / 1_000_000
                } else {
                    0
                },
            ),
            ("answermsec", if ans > 0 { (ans - start) / 1000 } else { 0 }),
            ("answerusec", if ans > 0 { ans - start } else { 0 }),
        ] {
            self.set(n, &v.to_string());
        }
    }

    /// Writes an event of this leg on the bus.
    pub fn emit(&self, shared: &Shared, kind: Kind, event: &[(&str, String)]) {
        let mut all: Vec<(&str, String)> = standard_headers(shared);
        all.extend(event.iter().cloned());
        // Events of a hung-up channel keep the captured call state over the live one.
        if kind.after_hangup() {
            for name in ["Answer-State", "Channel-Call-State"] {
                if !all.iter().any(|(n, _)| *n == name)
                    && let Some((_, v)) = templates::get(kind).head.iter().find(|(n, _)| n == name)
                {
                    all.push((name, v.clone()));
                }
            }
        }
        let headers = templates::render(
            kind,
            &Fill {
                event: &all,
                channel: &self.channel,
                vars: &self.vars,
                originate: &self.originate,
            },
        );
        publish(shared, headers, None);
    }
}

/// Q.850 code of a hangup cause.
pub fn q850(cause: &str) -> u32 {
    match cause {
        "UNALLOCATED_NUMBER" => 1,
        "NO_ROUTE_DESTINATION" => 3,
        "NORMAL_CLEARING" => 16,
        "USER_BUSY" => 17,
        "NO_USER_RESPONSE" => 18,
        "NO_ANSWER" => 19,
        "CALL_REJECTED" => 21,
        "DESTINATION_OUT_OF_ORDER" => 27,
        "NORMAL_TEMPORARY_FAILURE" => 41,
        "ORIGINATOR_CANCEL" => 487,
        "ALLOTTED_TIMEOUT" => 602,
        "SYSTEM_SHUTDOWN" => 503,
        _ => 16,
    }
}

/// SIP status a SIP leg reports for a hangup cause before answer.
pub fn sip_status(cause: &str) -> (u16, &'static str) {
    match cause {
        "USER_BUSY" => (486, "Busy Here"),
        "NO_ANSWER" => (480, "Temporarily Unavailable"),
        "CALL_REJECTED" => (603, "Decline"),
        "UNALLOCATED_NUMBER" => (404, "Not Found"),
        "NO_ROUTE_DESTINATION" => (404, "Not Found"),
        "ORIGINATOR_CANCEL" => (487, "Request Terminated"),
        "DESTINATION_OUT_OF_ORDER" => (502, "Bad Gateway"),
        _ => (503, "Service Unavailable"),
    }
}

/// The headers every event starts with (date, sequence, node).
pub(crate) fn standard_headers(shared: &Shared) -> Vec<(&'static str, String)> {
    let now = chrono::Utc::now();
    vec![
        ("Core-UUID", shared.core_uuid.clone()),
        ("FreeSWITCH-Hostname", shared.config.hostname.clone()),
        ("FreeSWITCH-Switchname", shared.config.hostname.clone()),
        (
            "Event-Date-Local",
            now.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
        ),
        (
            "Event-Date-GMT",
            now.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        ),
        ("Event-Date-Timestamp", now.timestamp_micros().to_string()),
        ("Event-Sequence", shared.next_sequence().to_string()),
    ]
}

fn publish(shared: &Shared, headers: Vec<(String, String)>, body: Option<String>) {
    let get = |n: &str| headers.iter().find(|(h, _)| h == n).map(|(_, v)| v.clone());
    let name = get("Event-Name").unwrap_or_default();
    let subclass = get("Event-Subclass");
    let unique_id = get("Unique-ID");
    shared.publish(BusItem::Event {
        name,
        subclass,
        unique_id,
        headers,
        body,
    });
}

/// Writes a BACKGROUND_JOB with `body`.
pub(crate) fn background_job(shared: &Shared, job_uuid: &str, cmd: &str, arg: &str, body: &str) {
    let mut ev = standard_headers(shared);
    ev.push(("Job-UUID", job_uuid.to_string()));
    ev.push(("Job-Command", cmd.to_string()));
    ev.push(("Job-Command-Arg", arg.to_string()));
    let empty = HashMap::new();
    let headers = templates::render(
        Kind::BackgroundJob,
        &Fill {
            event: &ev,
            channel: &empty,
            vars: &[],
            originate: &[],
        },
    );
    publish(shared, headers, Some(body.to_string()));
}

/// Where the result of an `originate` goes: a BACKGROUND_JOB, or the `api` reply.
pub(crate) enum JobReply {
    Background { job_uuid: String, arg: String },
    Api(oneshot::Sender<String>),
}

impl JobReply {
    fn send(self, shared: &Shared, body: &str) {
        match self {
            JobReply::Background { job_uuid, arg } => {
                background_job(shared, &job_uuid, "originate", &arg, body)
            }
            JobReply::Api(tx) => {
                let _ = tx.send(body.to_string());
            }
        }
    }
}

/// Geometry of the pages of a TIFF, for the page events.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pages {
    /// `(width, length, dpi)` per page.
    pub pages: Vec<(u32, u32, (f32, f32))>,
    /// Average compressed size of a page in the file, bytes.
    pub page_bytes: u64,
}

impl Pages {
    pub fn of(path: &Path) -> Pages {
        let pages: Vec<_> = faxd::gateway::tiff::read_pages(path)
            .map(|ps| {
                ps.iter()
                    .map(|p| (p.width, p.rows.len() as u32, p.dpi))
                    .collect()
            })
            .unwrap_or_default();
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let page_bytes = size / (pages.len().max(1) as u64);
        Pages { pages, page_bytes }
    }

    /// `(line resolution, file resolution, pixel size)` of page `n` (1-based), as mod_spandsp
    /// reports them (pixels per metre; spandsp 3 line values).
    pub fn describe(&self, n: u32) -> (String, String, String) {
        let (w, h, (dx, dy)) = self
            .pages
            .get((n.max(1) - 1) as usize)
            .or(self.pages.last())
            .copied()
            .unwrap_or((1728, 2200, (204.0, 196.0)));
        let file = |d: f32| (d as f64 / 0.0254) as u32;
        let line_x = if (dx - 204.0).abs() < 2.0 {
            8040
        } else {
            file(dx)
        };
        let line_y = match dy.round() as u32 {
            98 => 3850,
            196 => 7700,
            391 => 15400,
            _ => file(dy),
        };
        (
            format!("{line_x}x{line_y}"),
            format!("{}x{}", file(dx), file(dy)),
            format!("{w}x{h}"),
        )
    }
}

/// How a side of a fax reports: which leg, tx or rx, and the state carried between events.
pub(crate) struct FaxReporter {
    pub tx: bool,
    pub t38_status: String,
    pub local_ident: String,
    pub pages: Pages,
    pub ecm: bool,
    pub rate: u32,
    pub last_page: u32,
}

impl FaxReporter {
    fn onoff(b: bool) -> String {
        if b { "on" } else { "off" }.to_string()
    }

    fn encoding(&self) -> (&'static str, &'static str) {
        if self.ecm {
            ("32", "T.85(L0)")
        } else {
            ("4", "T.4 2-D")
        }
    }

    /// The variables mod_spandsp sets at start (`spanfax_init`).
    pub fn started(&self, leg: &mut Leg, path: &str, ecm_requested: bool, v17_disabled: bool) {
        leg.set("fax_v17_disabled", if v17_disabled { "1" } else { "0" });
        leg.set("fax_ecm_requested", if ecm_requested { "1" } else { "0" });
        leg.set("fax_filename", path);
    }

    /// Writes the event a [`FaxEvent`] stands for; `Finished` writes the result event only.
    pub fn report(&mut self, shared: &Shared, leg: &mut Leg, e: &FaxEvent) {
        let sub = |what: &str| format!("spandsp::{}fax{what}", if self.tx { "tx" } else { "rx" });
        match e {
            FaxEvent::Answered => {}
            FaxEvent::Negotiated {
                transfer_rate,
                ecm,
                remote_station_id,
            } => {
                self.ecm = *ecm;
                self.rate = *transfer_rate;
                leg.set("fax_transfer_rate", &transfer_rate.to_string());
                if self.tx {
                    leg.set("fax_document_total_pages", "0");
                }
                leg.set("fax_ecm_used", &Self::onoff(*ecm));
                leg.set("fax_t38_status", &self.t38_status);
                leg.set("fax_local_station_id", &self.local_ident);
                leg.set("fax_remote_station_id", remote_station_id);
                let mut ev = vec![
                    ("Event-Subclass", sub("negociateresult")),
                    ("uuid", leg.uuid.clone()),
                    ("fax-transfer-rate", transfer_rate.to_string()),
                    ("fax-ecm-used", Self::onoff(*ecm)),
                    ("fax-t38-status", self.t38_status.clone()),
                    ("fax-local-station-id", self.local_ident.clone()),
                    ("fax-remote-station-id", remote_station_id.clone()),
                ];
                if self.tx {
                    ev.push(("fax-document-total-pages", "0".into()));
                }
                let kind = if self.tx {
                    Kind::TxNegotiate
                } else {
                    Kind::RxNegotiate
                };
                leg.emit(shared, kind, &ev);
            }
            FaxEvent::Page {
                page,
                total,
                bad_rows,
            } => {
                self.last_page = *page;
                let (res, file_res, px) = self.pages.describe(*page);
                let (enc, enc_name) = self.encoding();
                let size = self.pages.page_bytes.to_string();
                for (n, v) in [
                    ("fax_image_resolution", res.clone()),
                    ("fax_file_image_resolution", file_res.clone()),
                    ("fax_image_pixel_size", px.clone()),
                    ("fax_file_image_pixel_size", px.clone()),
                    ("fax_image_size", size.clone()),
                    ("fax_bad_rows", bad_rows.to_string()),
                    ("fax_longest_bad_row_run", "0".into()),
                    ("fax_encoding", enc.into()),
                    ("fax_encoding_name", enc_name.into()),
                    ("fax_document_transferred_pages", page.to_string()),
                ] {
                    leg.set(n, &v);
                }
                if self.tx {
                    leg.set("fax_document_total_pages", &total.to_string());
                }
                let mut ev = vec![
                    ("Event-Subclass", sub("pageresult")),
                    ("uuid", leg.uuid.clone()),
                    ("fax-document-transferred-pages", page.to_string()),
                ];
                if self.tx {
                    ev.push(("fax-document-total-pages", total.to_string()));
                }
                ev.extend([
                    ("fax-image-resolution", res),
                    ("fax-file-image-resolution", file_res),
                    ("fax-image-size", size),
                    ("fax-image-pixel-size", px.clone()),
                    ("fax-file-image-pixel-size", px),
                    ("fax-bad-rows", bad_rows.to_string()),
                    ("fax-longest-bad-row-run", "0".into()),
                    ("fax-encoding", enc.into()),
                    ("fax-encoding-name", enc_name.into()),
                ]);
                let kind = if self.tx { Kind::TxPage } else { Kind::RxPage };
                leg.emit(shared, kind, &ev);
            }
            FaxEvent::Finished(r) => {
                let res = if r.transferred_pages > 0 {
                    self.pages.describe(r.transferred_pages).0
                } else {
                    r.image_resolution.clone()
                };
                let size = if r.transferred_pages > 0 {
                    self.pages.page_bytes.to_string()
                } else {
                    "0".into()
                };
                let vals: Vec<(&str, String)> = vec![
                    ("success", if r.success { "1" } else { "0" }.into()),
                    ("result_code", r.fax_result_code.to_string()),
                    ("result_text", r.fax_result_text.clone()),
                    ("ecm_used", Self::onoff(r.ecm_used)),
                    ("t38_status", self.t38_status.clone()),
                    ("local_station_id", self.local_ident.clone()),
                    ("remote_station_id", r.remote_station_id.clone()),
                    (
                        "document_transferred_pages",
                        r.transferred_pages.to_string(),
                    ),
                    ("document_total_pages", r.total_pages.to_string()),
                    ("image_resolution", res),
                    ("image_size", size),
                    ("bad_rows", r.bad_rows.to_string()),
                    ("transfer_rate", r.transfer_rate.to_string()),
                ];
                for (n, v) in &vals {
                    leg.set(&format!("fax_{n}"), v);
                }
                let mut ev = vec![("Event-Subclass", sub("result"))];
                if self.tx {
                    // txfax reports after the line dropped (spec §3.7: `Answer-State: hangup`).
                    ev.push(("Answer-State", "hangup".into()));
                    ev.push(("Hangup-Cause", r.hangup_cause.clone()));
                }
                for (var, header) in [
                    ("success", "fax-success"),
                    ("result_code", "fax-result-code"),
                    ("result_text", "fax-result-text"),
                    (
                        "document_transferred_pages",
                        "fax-document-transferred-pages",
                    ),
                    ("document_total_pages", "fax-document-total-pages"),
                    ("image_resolution", "fax-image-resolution"),
                    ("image_size", "fax-image-size"),
                    ("bad_rows", "fax-bad-rows"),
                    ("transfer_rate", "fax-transfer-rate"),
                    ("ecm_used", "fax-ecm-used"),
                    ("t38_status", "fax-t38-status"),
                    ("local_station_id", "fax-local-station-id"),
                    ("remote_station_id", "fax-remote-station-id"),
                ] {
                    if let Some((_, v)) = vals.iter().find(|(k, _)| *k == var) {
                        ev.push((header, v.clone()));
                    }
                }
                let kind = if self.tx {
                    Kind::TxResult
                } else {
                    Kind::RxResult
                };
                leg.emit(shared, kind, &ev);
            }
        }
    }
}

fn truthy(v: Option<&str>, default: bool) -> bool {
    match v {
        Some(v) => matches!(
            v.to_ascii_lowercase().as_str(),
            "true" | "yes" | "on" | "1" | "enabled" | "active" | "allow"
        ),
        None => default,
    }
}

/// A 32-hex uuid becomes the dashed form FreeSWITCH uses for `Unique-ID`; anything else is
/// kept.
fn normalize_uuid(u: &str) -> String {
    if u.len() == 32 && u.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!(
            "{}-{}-{}-{}-{}",
            &u[0..8],
            &u[8..12],
            &u[12..16],
            &u[16..20],
            &u[20..32]
        )
    } else {
        u.to_string()
    }
}

/// Runs one `originate` (`bgapi` or `api`) to its end.
pub(crate) async fn originate(shared: Arc<Shared>, arg: String, reply: JobReply) {
    let o = match vars::parse_originate(&arg) {
        Ok(o) => o,
        Err(vars::Refused(text)) => {
            reply.send(&shared, &text);
            return;
        }
    };
    let uuid = o
        .var("origination_uuid")
        .map(normalize_uuid)
        .filter(|u| !u.is_empty())
        .unwrap_or_else(crate::new_uuid);
    let number = o.number();
    if let Ok(mut v) = shared.originates.lock() {
        v.push(OriginateRecord {
            job_uuid: match &reply {
                JobReply::Background { job_uuid, .. } => job_uuid.clone(),
                JobReply::Api(_) => String::new(),
            },
            uuid: uuid.clone(),
            dial: o.dial.clone(),
            number: number.clone(),
            vars: o.vars.clone(),
            app: o.app.clone(),
            app_arg: o.app_arg.clone(),
        });
    }
    if shared.channel(&uuid).is_some() {
        reply.send(&shared, "-ERR NORMAL_TEMPORARY_FAILURE\n");
        return;
    }
    let (hang_tx, hang_rx) = mpsc::unbounded_channel();
    shared.add_channel(
        &uuid,
        ChannelHandle {
            hangup: hang_tx,
            apps: None,
        },
    );
    let cid_number = o
        .var("origination_caller_id_number")
        .unwrap_or("0000000000")
        .to_string();
    let cid_name = o
        .var("origination_caller_id_name")
        .unwrap_or("Outbound Call")
        .to_string();
    let mut leg = Leg::new(
        &uuid,
        &o.dial,
        &cid_number,
        &cid_name,
        &number,
        o.vars.clone(),
    );
    leg.set(
        "session_id",
        &shared
            .sessions_total
            .load(std::sync::atomic::Ordering::Relaxed)
            .to_string(),
    );
    let endpoint = o.dial.split('/').next().unwrap_or("");
    leg.set("originate_endpoint", endpoint);
    if endpoint != "loopback" {
        leg.channel
            .insert("Caller-Source".into(), "src/switch_ivr_originate.c".into());
    }
    if endpoint == "sofia" {
        let host = o.dial.split('/').nth(2).unwrap_or("carrier");
        leg.set("sip_profile_name", "external");
        leg.set("sip_destination_url", &format!("sip:{number}@{host}"));
        leg.set("sip_call_id", &crate::new_uuid());
    }
    let ring = o
        .var("originate_timeout")
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(60));
    let a = ALeg {
        shared: shared.clone(),
        leg,
        o,
        reply: Some(reply),
        hang_rx,
        ring,
        app_uuid: crate::new_uuid(),
    };
    let faxd_number = shared.config.inbound_listen.is_some()
        && crate::matches_any(&shared.config.faxd_numbers, &number);
    if faxd_number {
        a.call_faxd(&number).await;
    } else {
        a.call_pstn(&number).await;
    }
    shared.remove_channel(&uuid);
}

struct ALeg {
    shared: Arc<Shared>,
    leg: Leg,
    o: Originate,
    reply: Option<JobReply>,
    hang_rx: mpsc::UnboundedReceiver<String>,
    ring: Duration,
    /// `Application-UUID` of the `&txfax()` the originate runs.
    app_uuid: String,
}

impl ALeg {
    fn reply(&mut self, body: &str) {
        if let Some(r) = self.reply.take() {
            r.send(&self.shared, body);
        }
    }

    /// Not answered: HANGUP_COMPLETE (with the SIP leg's failure variables), then the job's
    /// `-ERR <cause>`.
    fn unanswered(&mut self, cause: &str) {
        let (code, phrase) = sip_status(cause);
        let code = code.to_string();
        self.leg.set("sip_hangup_disposition", "recv_refuse");
        self.leg.set("sip_invite_failure_status", &code);
        self.leg.set("sip_invite_failure_phrase", phrase);
        self.leg.set("sip_term_status", &code);
        self.leg
            .set("proto_specific_hangup_cause", &format!("sip:{code}"));
        self.leg.set("sip_term_cause", &q850(cause).to_string());
        self.leg.mark_hangup(cause);
        self.leg.emit(
            &self.shared,
            Kind::HangupCompleteUnanswered,
            &[("Hangup-Cause", cause.to_string())],
        );
        self.reply(&format!("-ERR {cause}\n"));
    }

    fn answered(&mut self) {
        self.leg.mark_answered();
        self.leg.set("sip_term_status", "200");
        self.leg.emit(&self.shared, Kind::AnswerA, &[]);
        let ok = format!("+OK {}\n", self.leg.uuid);
        self.reply(&ok);
    }

    async fn ring_out(&mut self) -> String {
        let mut closing = self.shared.closing.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(self.ring) => "NO_ANSWER".to_string(),
            c = self.hang_rx.recv() => c.unwrap_or_else(|| "ORIGINATOR_CANCEL".into()),
            _ = crate::until_true(&mut closing) => "ORIGINATOR_CANCEL".to_string(),
        }
    }

    async fn call_pstn(mut self, number: &str) {
        let machine = match pstn::route(&self.shared.config.numbers, number) {
            Route::Unanswered(u) => return self.unanswered(u.cause),
            Route::NoAnswer => {
                let cause = self.ring_out().await;
                return self.unanswered(&cause);
            }
            Route::Machine(m) => m,
            Route::Local => Machine::Receive,
        };
        self.answered();
        let received = self
            .shared
            .config
            .spool_dir
            .join(format!("remote-{}.tiff", self.leg.uuid));
        let far = Party {
            ident: number.to_string(),
            header: String::new(),
            ecm: true,
            max_rate: 14_400,
            events: None,
            hangup: None,
        };
        let t38_refused = crate::matches_any(&self.shared.config.t38_refused, number);
        self.txfax(machine, far, received, t38_refused, None).await;
    }

    async fn call_faxd(mut self, number: &str) {
        let (to_a_tx, mut to_a) = mpsc::unbounded_channel();
        let (to_b, to_b_rx) = mpsc::unbounded_channel();
        let spec = BSpec {
            from: self
                .leg
                .var("origination_caller_id_number")
                .unwrap_or("0000000000")
                .to_string(),
            from_name: self
                .leg
                .var("origination_caller_id_name")
                .unwrap_or("Outbound Call")
                .to_string(),
            to: number.to_string(),
            channel_name: format!("loopback/{number}-b"),
            originate: self.o.vars.clone(),
            other_leg: Some(self.leg.uuid.clone()),
        };
        tokio::spawn(socket::run_b_leg(
            self.shared.clone(),
            spec,
            to_a_tx,
            to_b_rx,
        ));
        // Ringing until faxd answers, refuses or the ring time ends.
        let mut closing = self.shared.closing.subscribe();
        let outcome = tokio::select! {
            m = to_a.recv() => match m {
                Some(ToA::Answered) => Ok(()),
                Some(ToA::Hangup(c)) => Err(c),
                Some(ToA::RxFax(_)) => Ok(()),
                None => Err("NORMAL_CLEARING".to_string()),
            },
            _ = tokio::time::sleep(self.ring) => Err("NO_ANSWER".to_string()),
            c = self.hang_rx.recv() => Err(c.unwrap_or_else(|| "ORIGINATOR_CANCEL".into())),
            _ = crate::until_true(&mut closing) => Err("ORIGINATOR_CANCEL".to_string()),
        };
        if let Err(cause) = outcome {
            let _ = to_b.send(ToB::Hangup("ORIGINATOR_CANCEL".into()));
            return self.unanswered(&cause);
        }
        self.answered();
        self.txfax(
            Machine::Receive,
            Party::default_far(),
            PathBuf::new(),
            false,
            Some((to_a, to_b)),
        )
        .await;
    }

    /// Runs `&txfax(<path>)` on the answered A leg, then hangs up.
    async fn txfax(
        mut self,
        machine: Machine,
        far: Party,
        received: PathBuf,
        t38_refused: bool,
        faxd: Option<(mpsc::UnboundedReceiver<ToA>, mpsc::UnboundedSender<ToB>)>,
    ) {
        let shared = self.shared.clone();
        let path = self.o.app_arg.clone();
        if self.o.app != "txfax" {
            // Only `&txfax()` is simulated: other applications end at once.
            self.hangup("NORMAL_CLEARING", faxd.map(|f| f.1));
            return;
        }
        self.leg.set("current_application_data", &path);
        self.leg.set("current_application", "txfax");
        if path.is_empty() || !Path::new(&path).is_file() {
            let text = if path.is_empty() {
                "Fax TX filename not set"
            } else {
                "Cannot send non-existant fax file"
            };
            self.leg.set("current_application_response", text);
            self.leg.emit(
                &shared,
                Kind::ExecuteCompleteA,
                &[
                    ("Application", "txfax".to_string()),
                    ("Application-Data", path.clone()),
                    ("Application-Response", text.to_string()),
                    ("Application-UUID", self.app_uuid.clone()),
                ],
            );
            self.hangup("NORMAL_CLEARING", faxd.map(|f| f.1));
            return;
        }
        let ecm = truthy(self.leg.var("fax_use_ecm"), true);
        let v17_off = truthy(self.leg.var("fax_disable_v17"), false);
        let t38_on = truthy(self.leg.var("fax_enable_t38"), true);
        let t38_request = t38_on && truthy(self.leg.var("fax_enable_t38_request"), false);
        let t38 = t38_request && !t38_refused;
        let p = PathBuf::from(&path);
        let pages = tokio::task::spawn_blocking(move || Pages::of(&p))
            .await
            .unwrap_or_default();
        let ident = self
            .leg
            .var("fax_ident")
            .unwrap_or("SpanDSP Fax Ident")
            .to_string();
        let header = self
            .leg
            .var("fax_header")
            .unwrap_or("SpanDSP Fax Header")
            .to_string();
        let mut rep = FaxReporter {
            tx: true,
            t38_status: if t38 { "negotiated" } else { "off" }.into(),
            local_ident: ident.clone(),
            pages: pages.clone(),
            ecm,
            rate: 0,
            last_page: 0,
        };
        rep.started(&mut self.leg, &path, ecm, v17_off);
        self.leg.set("read_codec", "L16");
        self.leg.set("read_rate", "8000");

        // The far end: a simulated machine, or faxd's rxfax on the B leg.
        let (far, received, b) = match faxd {
            None => (far, received, None),
            Some((mut to_a, to_b)) => {
                let mut closing = shared.closing.subscribe();
                let got = tokio::select! {
                    m = wait_rxfax(&mut to_a) => m,
                    c = self.hang_rx.recv() => Err(c.unwrap_or_else(|| "NORMAL_CLEARING".into())),
                    _ = crate::until_true(&mut closing) => Err("SYSTEM_SHUTDOWN".to_string()),
                };
                match got {
                    Ok(rx) => {
                        let (tx, prx) = mpsc::channel(64);
                        let _ = rx.line.send((pages.clone(), rep.t38_status.clone()));
                        let party = Party {
                            ident: rx.ident,
                            header: String::new(),
                            ecm: rx.ecm,
                            max_rate: 14_400,
                            events: Some(tx),
                            hangup: Some(rx.hangup),
                        };
                        let _ = rx.events.send(prx);
                        (party, rx.path, Some((to_a, to_b)))
                    }
                    Err(cause) => {
                        // The far end hung up before receiving: txfax runs against silence
                        // until the line drops.
                        self.finish_without_far(&cause, &mut rep, Some(to_b));
                        return;
                    }
                }
            }
        };
        let (events_tx, mut events) = mpsc::channel(64);
        let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
        let mut shutdown = shared.closing.subscribe();
        let (hang_tx, hang_rx) = mpsc::unbounded_channel();
        let session = Session {
            transport: if t38 {
                Transport::T38
            } else {
                Transport::Audio(shared.config.law)
            },
            line_time: shared.config.line_time,
            max_line: Duration::from_secs(shared.config.max_call_secs.max(1)),
            document: PathBuf::from(&path),
            received,
            far: machine,
            caller: Party {
                ident,
                header,
                ecm,
                max_rate: if v17_off { 9600 } else { 14_400 },
                events: Some(events_tx),
                hangup: Some(hang_rx),
            },
            callee: far,
            closing: closing_rx,
        };
        let line = tokio::task::spawn_blocking(move || session::run(session));
        let mut result = None;
        let mut killed = false;
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Some(FaxEvent::Finished(r)) => result = Some(r),
                    Some(e) => rep.report(&shared, &mut self.leg, &e),
                    None => break,
                },
                c = self.hang_rx.recv(), if result.is_none() => {
                    let c = c.unwrap_or_else(|| "NORMAL_CLEARING".into());
                    killed = true;
                    // Killed: the far leg hangs up at once too (it reports after its hang-up).
                    if let Some((_, to_b)) = &b {
                        let _ = to_b.send(ToB::Hangup(c.clone()));
                    }
                    let _ = hang_tx.send(c);
                }
                _ = crate::until_true(&mut shutdown), if result.is_none() && !*closing_tx.borrow() => {
                    let _ = closing_tx.send(true);
                }
            }
        }
        let _ = line.await;
        let mut result = result.unwrap_or_else(|| FaxResult {
            hangup_cause: "NORMAL_CLEARING".into(),
            fax_result_code: 49,
            fax_result_text: session::completion_text(49),
            ..FaxResult::default()
        });
        // Spec §3.7 and capture 3: the receiving leg hangs up first; the sender's result
        // comes after its hang-up (bounded: a receiver that never hangs up is hung up).
        let b = match b {
            // A killed sender reports at once; the receiver hangs up on its own time.
            Some((_, to_b)) if killed => Some(to_b),
            Some((mut to_a, to_b)) => {
                let waited = tokio::time::timeout(B_HANGUP_GRACE, async {
                    loop {
                        match to_a.recv().await {
                            Some(ToA::Hangup(c)) => return Some(c),
                            Some(_) => continue,
                            None => return None,
                        }
                    }
                })
                .await;
                if let Ok(Some(c)) = waited
                    && result.fax_result_code == 0
                {
                    result.hangup_cause = c;
                }
                Some(to_b)
            }
            None => None,
        };
        rep.report(&shared, &mut self.leg, &FaxEvent::Finished(result.clone()));
        let cause = result.hangup_cause.clone();
        self.leg.emit(
            &shared,
            Kind::ExecuteCompleteA,
            &[
                ("Hangup-Cause", cause.clone()),
                ("Answer-State", "hangup".to_string()),
                ("Application", "txfax".to_string()),
                ("Application-Data", path.clone()),
                ("Application-Response", "_none_".to_string()),
                ("Application-UUID", self.app_uuid.clone()),
            ],
        );
        self.hangup(&cause, b);
    }

    /// txfax without a far end (it hung up first): phase E with 49 at once.
    fn finish_without_far(
        &mut self,
        cause: &str,
        rep: &mut FaxReporter,
        b: Option<mpsc::UnboundedSender<ToB>>,
    ) {
        let r = FaxResult {
            hangup_cause: cause.to_string(),
            fax_result_code: 49,
            fax_result_text: session::completion_text(49),
            local_station_id: rep.local_ident.clone(),
            ..FaxResult::default()
        };
        rep.report(&self.shared, &mut self.leg, &FaxEvent::Finished(r));
        let path = self.o.app_arg.clone();
        self.leg.emit(
            &self.shared,
            Kind::ExecuteCompleteA,
            &[
                ("Hangup-Cause", cause.to_string()),
                ("Answer-State", "hangup".to_string()),
                ("Application", "txfax".to_string()),
                ("Application-Data", path),
                ("Application-Response", "_none_".to_string()),
                ("Application-UUID", self.app_uuid.clone()),
            ],
        );
        self.hangup(cause, b);
    }

    fn hangup(&mut self, cause: &str, b: Option<mpsc::UnboundedSender<ToB>>) {
        if let Some(b) = b {
            let _ = b.send(ToB::Hangup(cause.to_string()));
        }
        self.leg.set("last_app", "txfax");
        self.leg.set("last_arg", &self.o.app_arg.clone());
        self.leg.mark_hangup(cause);
        self.leg.emit(
            &self.shared,
            Kind::HangupCompleteA,
            &[("Hangup-Cause", cause.to_string())],
        );
        // A job not answered yet (an app other than txfax never answers here).
        self.reply(&format!("-ERR {cause}\n"));
    }
}

/// The B leg's `rxfax` request: where to write, its station id and channels.
pub(crate) struct RxFaxRequest {
    pub path: PathBuf,
    pub ident: String,
    pub ecm: bool,
    pub hangup: mpsc::UnboundedReceiver<String>,
    /// Gets the receiver of the callee's fax events.
    pub events: oneshot::Sender<mpsc::Receiver<FaxEvent>>,
    /// Gets the sent document's page geometry and the line's `fax_t38_status`.
    pub line: oneshot::Sender<(Pages, String)>,
}

async fn wait_rxfax(to_a: &mut mpsc::UnboundedReceiver<ToA>) -> Result<RxFaxRequest, String> {
    loop {
        match to_a.recv().await {
            Some(ToA::RxFax(r)) => return Ok(r),
            Some(ToA::Answered) => continue,
            Some(ToA::Hangup(c)) => return Err(c),
            None => return Err("NORMAL_CLEARING".into()),
        }
    }
}

trait DefaultFar {
    fn default_far() -> Party;
}

impl DefaultFar for Party {
    fn default_far() -> Party {
        Party {
            ident: String::new(),
            header: String::new(),
            ecm: true,
            max_rate: 14_400,
            events: None,
            hangup: None,
        }
    }
}

/// [`StandIn::place_inbound_call`](crate::StandIn::place_inbound_call).
pub(crate) fn place_inbound_call(
    shared: Arc<Shared>,
    from: &str,
    to: &str,
    tiff: PathBuf,
    options: InboundCallOptions,
) -> oneshot::Receiver<InboundCallOutcome> {
    let (done_tx, done) = oneshot::channel();
    let from = from.to_string();
    let to = to.to_string();
    tokio::spawn(async move {
        let (to_a_tx, mut to_a) = mpsc::unbounded_channel();
        let (to_b, to_b_rx) = mpsc::unbounded_channel();
        let (uuid_tx, mut uuid_rx) = oneshot::channel();
        let (law, line_time, max_secs) = (
            shared.config.law,
            shared.config.line_time,
            shared.config.max_call_secs.max(1),
        );
        let spec = BSpec {
            from: from.clone(),
            // A carrier call without a display name shows the number.
            from_name: if options.from_name.is_empty() {
                from.clone()
            } else {
                options.from_name.clone()
            },
            to: to.clone(),
            channel_name: format!("sofia/external/{from}@127.0.0.1"),
            originate: Vec::new(),
            other_leg: None,
        };
        tokio::spawn(async move {
            let uuid = socket::run_b_leg(shared, spec, to_a_tx, to_b_rx).await;
            let _ = uuid_tx.send(uuid);
        });
        let unanswered = |cause: String| FaxResult {
            hangup_cause: cause.clone(),
            sip_code: sip_status(&cause).0,
            ..FaxResult::default()
        };
        let ring = tokio::select! {
            m = wait_rxfax(&mut to_a) => m,
            _ = tokio::time::sleep(options.ring_timeout) => Err("NO_ANSWER".into()),
        };
        let result = match ring {
            Err(cause) => {
                let _ = to_b.send(ToB::Hangup("ORIGINATOR_CANCEL".into()));
                unanswered(cause)
            }
            Ok(rx) => {
                let pages = {
                    let t = tiff.clone();
                    tokio::task::spawn_blocking(move || Pages::of(&t))
                        .await
                        .unwrap_or_default()
                };
                let _ = rx.line.send((pages, "off".into()));
                let (ptx, prx) = mpsc::channel(64);
                let _ = rx.events.send(prx);
                let (etx, mut erx) = mpsc::channel(64);
                let (_closing_tx, closing_rx) = tokio::sync::watch::channel(false);
                let session = Session {
                    transport: Transport::Audio(law),
                    line_time,
                    max_line: Duration::from_secs(max_secs),
                    document: tiff.clone(),
                    received: rx.path,
                    far: Machine::Receive,
                    caller: Party {
                        ident: if options.ident.is_empty() {
                            from.clone()
                        } else {
                            options.ident.clone()
                        },
                        header: options.header.clone(),
                        ecm: options.ecm,
                        max_rate: 14_400,
                        events: Some(etx),
                        hangup: None,
                    },
                    callee: Party {
                        ident: rx.ident,
                        header: String::new(),
                        ecm: rx.ecm,
                        max_rate: 14_400,
                        events: Some(ptx),
                        hangup: Some(rx.hangup),
                    },
                    closing: closing_rx,
                };
                let line = tokio::task::spawn_blocking(move || session::run(session));
                let mut result = FaxResult::default();
                while let Some(e) = erx.recv().await {
                    if let FaxEvent::Finished(r) = e {
                        result = r;
                    }
                }
                let _ = line.await;
                // The receiver hangs up first (it has its fax); else the sender does.
                let _ = tokio::time::timeout(B_HANGUP_GRACE, async {
                    loop {
                        match to_a.recv().await {
                            Some(ToA::Hangup(_)) | None => return,
                            Some(_) => continue,
                        }
                    }
                })
                .await;
                let _ = to_b.send(ToB::Hangup("NORMAL_CLEARING".into()));
                result
            }
        };
        let uuid = tokio::time::timeout(Duration::from_secs(30), &mut uuid_rx)
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten();
        let _ = done_tx.send(InboundCallOutcome { uuid, result });
    });
    done
}
