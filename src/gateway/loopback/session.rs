//! One answered loopback call on the line: two spandsp T.30 terminals (the calling one sends
//! the TIFF, the answering one receives it) exchange 20 ms frames of G.711-companded audio or
//! T.38 IFP packets. Blocking and CPU-bound: runs on a blocking thread, never on the async
//! runtime. Events are reported the way mod_spandsp's phase B/D/E handlers report them.

use std::collections::VecDeque;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use spandsp::fax::FaxState;
use spandsp::spandsp_sys as sys;
use spandsp::t4::T4Compression;
use spandsp::t30::T30ModemSupport;
use spandsp::t38_terminal::T38Terminal;
use tokio::sync::{mpsc, watch};

use super::pstn::Machine;
use crate::config::{G711Law, LineTime};
use crate::gateway::{FaxEvent, FaxResult};

/// Samples per frame: 20 ms at 8 kHz.
const FRAME: usize = 160;
const SAMPLE_RATE: u64 = 8000;
/// Line time a side may keep going after the other side finished (to flush its last frames).
const GRACE_SAMPLES: u64 = 5 * SAMPLE_RATE;
/// Line time after the far end's page N before it hangs up, if the sender did not see the
/// confirmation sooner.
const HANGUP_AFTER_PAGE_SAMPLES: u64 = 3 * SAMPLE_RATE;

/// How the two terminals are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Audio(G711Law),
    T38,
}

/// One end of the call.
pub struct Party {
    /// Station id (TSI/CSI), `fax_ident`.
    pub ident: String,
    /// Page header text (sender only); empty: no header line.
    pub header: String,
    pub ecm: bool,
    pub max_rate: u32,
    /// Where events go; `None` for a simulated far end nobody watches.
    pub events: Option<mpsc::Sender<FaxEvent>>,
    /// Hangup requests with their cause.
    pub hangup: Option<mpsc::UnboundedReceiver<String>>,
}

/// Everything one call needs.
pub struct Session {
    pub transport: Transport,
    pub line_time: LineTime,
    pub max_line: Duration,
    pub document: PathBuf,
    pub received: PathBuf,
    pub far: Machine,
    pub caller: Party,
    pub callee: Party,
    /// Becomes true when the engine shuts down: the call is hung up (`SYSTEM_SHUTDOWN`).
    pub closing: watch::Receiver<bool>,
}

/// What a T.30 callback saw; read and reset by the driver after each frame.
struct Hooks {
    t30: *mut sys::t30_state_t,
    sending: bool,
    pending: Vec<FaxEvent>,
    pages: u32,
    completion: Option<i32>,
}

impl Hooks {
    fn new(sending: bool) -> Self {
        Self {
            t30: std::ptr::null_mut(),
            sending,
            pending: Vec::new(),
            pages: 0,
            completion: None,
        }
    }

    fn stats(&self) -> sys::t30_stats_t {
        // SAFETY: t30_stats_t is plain C data; `t30` is live while the terminal is.
        let mut s = unsafe { std::mem::zeroed::<sys::t30_stats_t>() };
        if !self.t30.is_null() {
            unsafe { sys::t30_get_transfer_statistics(self.t30, &mut s) };
        }
        s
    }

    fn remote_ident(&self) -> String {
        if self.t30.is_null() {
            return String::new();
        }
        // SAFETY: spandsp returns a NUL-terminated string it owns, or NULL.
        cstr(unsafe { sys::t30_get_rx_ident(self.t30) })
    }

    fn local_ident(&self) -> String {
        if self.t30.is_null() {
            return String::new();
        }
        // SAFETY: as above.
        cstr(unsafe { sys::t30_get_tx_ident(self.t30) })
    }
}

/// State shared with spandsp's C callbacks. Rust and C both reach it through one raw pointer,
/// so neither invalidates the other's access; Rust only touches it between FFI calls (the
/// references `get`/`get_mut` hand out never live across one), and callbacks never re-enter.
struct Shared<T>(NonNull<T>);

impl<T> Shared<T> {
    fn new(value: T) -> Self {
        Self(NonNull::from(Box::leak(Box::new(value))))
    }

    /// The callback user data.
    fn user(&self) -> *mut c_void {
        self.0.as_ptr().cast()
    }

    fn get(&self) -> &T {
        // SAFETY: valid until drop; no callback runs while the reference lives (see above).
        unsafe { self.0.as_ref() }
    }

    fn get_mut(&mut self) -> &mut T {
        // SAFETY: as in `get`.
        unsafe { self.0.as_mut() }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // SAFETY: allocated by `new` from a Box, freed once, after the terminals that used it.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

impl Shared<Hooks> {
    fn take_pending(&mut self) -> Vec<FaxEvent> {
        std::mem::take(&mut self.get_mut().pending)
    }
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null, NUL-terminated (spandsp's own buffers).
    unsafe { CStr::from_ptr(p) }
        .to_string_lossy()
        .trim()
        .to_string()
}

/// T.30 completion text exactly as FreeSWITCH reports it (`t30_completion_code_to_str`).
pub fn completion_text(code: i32) -> String {
    // SAFETY: returns a static string for any code.
    cstr(unsafe { sys::t30_completion_code_to_str(code) })
}

unsafe extern "C" fn phase_b(user: *mut c_void, _result: c_int) -> c_int {
    // SAFETY: `user` is the Hooks box registered with this terminal, alive for its lifetime.
    let h = unsafe { &mut *user.cast::<Hooks>() };
    let s = h.stats();
    h.pending.push(FaxEvent::Negotiated {
        transfer_rate: s.bit_rate.max(0) as u32,
        ecm: s.error_correcting_mode != 0,
        remote_station_id: h.remote_ident(),
    });
    0
}

unsafe extern "C" fn phase_d(user: *mut c_void, _result: c_int) -> c_int {
    // SAFETY: as in phase_b.
    let h = unsafe { &mut *user.cast::<Hooks>() };
    let s = h.stats();
    let page = if h.sending { s.pages_tx } else { s.pages_rx }.max(0) as u32;
    h.pages = page;
    let total = if h.sending {
        s.pages_in_file.max(0) as u32
    } else {
        page
    };
    h.pending.push(FaxEvent::Page {
        page,
        total,
        bad_rows: s.bad_rows.max(0) as u32,
    });
    0
}

unsafe extern "C" fn phase_e(user: *mut c_void, code: c_int) {
    // SAFETY: as in phase_b.
    let h = unsafe { &mut *user.cast::<Hooks>() };
    h.completion = Some(code);
}

/// Outgoing T.38 packets of one terminal.
#[derive(Default)]
struct Packets {
    queue: VecDeque<(u16, Vec<u8>)>,
    seq: u16,
}

unsafe extern "C" fn t38_packet(
    _core: *mut sys::t38_core_state_t,
    user: *mut c_void,
    data: *const u8,
    len: c_int,
    _count: c_int,
) -> c_int {
    if data.is_null() || len < 0 {
        return -1;
    }
    // SAFETY: `user` is the Packets box of this terminal; `data` holds `len` bytes.
    let q = unsafe { &mut *user.cast::<Packets>() };
    let bytes = unsafe { std::slice::from_raw_parts(data, len as usize) }.to_vec();
    q.queue.push_back((q.seq, bytes));
    q.seq = q.seq.wrapping_add(1);
    0
}

/// The next packet a terminal sent (the borrow ends before the packet is delivered).
fn pop(packets: &mut Shared<Packets>) -> Option<(u16, Vec<u8>)> {
    packets.get_mut().queue.pop_front()
}

/// A T.30 terminal on an audio or T.38 line.
enum Terminal {
    Audio(FaxState),
    T38(T38Terminal),
}

impl Terminal {
    fn new(
        transport: Transport,
        calling: bool,
        packets: &Shared<Packets>,
    ) -> Result<Self, spandsp::error::SpanDspError> {
        Ok(match transport {
            Transport::Audio(_) => {
                let t = FaxState::new(calling)?;
                t.set_transmit_on_idle(true);
                Terminal::Audio(t)
            }
            // SAFETY: `packets` outlives the terminal (dropped after it).
            Transport::T38 => Terminal::T38(unsafe {
                T38Terminal::new_raw(calling, Some(t38_packet), packets.user())?
            }),
        })
    }

    fn t30(&self) -> *mut sys::t30_state_t {
        match self {
            // SAFETY: live states.
            Terminal::Audio(t) => unsafe { sys::fax_get_t30_state(t.as_ptr()) },
            Terminal::T38(t) => unsafe { sys::t38_terminal_get_t30_state(t.as_ptr()) },
        }
    }
}

/// Configures a terminal's T.30 engine like mod_spandsp does.
fn configure(
    t30: *mut sys::t30_state_t,
    party: &Party,
    hooks: &mut Shared<Hooks>,
    file: &std::path::Path,
) -> Result<(), String> {
    let c = |s: &str| CString::new(s).map_err(|_| format!("NUL in {s:?}"));
    let ident = c(&party.ident)?;
    let header = c(&party.header)?;
    let path = c(&file.to_string_lossy())?;
    let modems = if party.max_rate >= 12_000 {
        T30ModemSupport::V27TER | T30ModemSupport::V29 | T30ModemSupport::V17
    } else if party.max_rate >= 7_200 {
        T30ModemSupport::V27TER | T30ModemSupport::V29
    } else {
        T30ModemSupport::V27TER
    };
    let compressions = T4Compression::T4_1D
        | T4Compression::T4_2D
        | T4Compression::T6
        | T4Compression::T85
        | T4Compression::T85_L0;
    hooks.get_mut().t30 = t30;
    let sending = hooks.get().sending;
    let user = hooks.user();
    // SAFETY: `t30` belongs to a live terminal; strings are copied by spandsp; `hooks` outlives
    // the terminal.
    unsafe {
        sys::t30_set_tx_ident(t30, ident.as_ptr());
        if !party.header.is_empty() {
            sys::t30_set_tx_page_header_info(t30, header.as_ptr());
        }
        sys::t30_set_ecm_capability(t30, party.ecm);
        sys::t30_set_supported_modems(t30, modems.bits());
        sys::t30_set_supported_compressions(t30, compressions.bits() as c_int);
        if sending {
            sys::t30_set_tx_file(t30, path.as_ptr(), -1, -1);
        } else {
            sys::t30_set_rx_file(t30, path.as_ptr(), -1);
        }
        sys::t30_set_phase_b_handler(t30, Some(phase_b), user);
        sys::t30_set_phase_d_handler(t30, Some(phase_d), user);
        sys::t30_set_phase_e_handler(t30, Some(phase_e), user);
    }
    Ok(())
}

fn deliver(party: &Party, events: Vec<FaxEvent>) {
    if let Some(tx) = &party.events {
        for e in events {
            // A receiver that went away no longer cares; the line goes on.
            let _ = tx.blocking_send(e);
        }
    }
}

fn compand(law: G711Law, frame: &mut [i16]) {
    use spandsp::g711;
    for s in frame {
        *s = match law {
            G711Law::Ulaw => g711::ulaw_to_linear(g711::linear_to_ulaw(*s)),
            G711Law::Alaw => g711::alaw_to_linear(g711::linear_to_alaw(*s)),
        };
    }
}

fn result(
    hooks: &Hooks,
    code: i32,
    cause: &str,
    t38: bool,
    received: Option<PathBuf>,
) -> FaxResult {
    let s = hooks.stats();
    let (pages, total) = if hooks.sending {
        (s.pages_tx.max(0) as u32, s.pages_in_file.max(0) as u32)
    } else {
        (s.pages_rx.max(0) as u32, s.pages_rx.max(0) as u32)
    };
    FaxResult {
        success: code == 0,
        hangup_cause: cause.to_string(),
        sip_code: 200,
        fax_result_code: code,
        fax_result_text: completion_text(code),
        transferred_pages: pages,
        total_pages: total,
        transfer_rate: s.bit_rate.max(0) as u32,
        ecm_used: s.error_correcting_mode != 0,
        t38_used: t38,
        remote_station_id: hooks.remote_ident(),
        local_station_id: hooks.local_ident(),
        bad_rows: s.bad_rows.max(0) as u32,
        longest_bad_row_run: s.longest_bad_row_run.max(0) as u32,
        image_resolution: if s.x_resolution > 0 {
            format!("{}x{}", s.x_resolution, s.y_resolution)
        } else {
            String::new()
        },
        received_file: received,
    }
}

/// Runs the call to its end and sends each side's `Finished`. Blocking.
pub fn run(mut session: Session) {
    let t38 = session.transport == Transport::T38;
    // Callback storage first, so it is dropped after the terminals that point to it.
    let mut caller_hooks = Shared::new(Hooks::new(true));
    let mut callee_hooks = Shared::new(Hooks::new(false));
    let mut caller_packets = Shared::new(Packets::default());
    let mut callee_packets = Shared::new(Packets::default());

    let setup = (|| -> Result<(Terminal, Option<Terminal>), String> {
        let caller =
            Terminal::new(session.transport, true, &caller_packets).map_err(|e| e.to_string())?;
        configure(
            caller.t30(),
            &session.caller,
            &mut caller_hooks,
            &session.document,
        )?;
        let callee = match session.far {
            Machine::Silent => None,
            _ => {
                let t = Terminal::new(session.transport, false, &callee_packets)
                    .map_err(|e| e.to_string())?;
                configure(
                    t.t30(),
                    &session.callee,
                    &mut callee_hooks,
                    &session.received,
                )?;
                Some(t)
            }
        };
        Ok((caller, callee))
    })();
    let (caller, callee) = match setup {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "loopback: cannot set up the fax terminals");
            let mut r = FaxResult {
                hangup_cause: "NORMAL_TEMPORARY_FAILURE".into(),
                sip_code: 503,
                ..FaxResult::default()
            };
            r.fax_result_text = e;
            deliver(&session.caller, vec![FaxEvent::Finished(r.clone())]);
            deliver(&session.callee, vec![FaxEvent::Finished(r)]);
            return;
        }
    };

    let started = Instant::now();
    let max_samples = session.max_line.as_secs().saturating_mul(SAMPLE_RATE);
    let mut now: u64 = 0;
    // Set when a hangup (not the T.30 procedure) ended the call: its cause.
    let mut hangup_cause: Option<String> = None;
    let mut caller_done_at: Option<u64> = None;
    let mut callee_done_at: Option<u64> = None;
    let mut far_page_at: Option<u64> = None;
    let mut a = [0i16; FRAME];
    let mut b = [0i16; FRAME];

    loop {
        // Hangup requests from either side end the call for both.
        let hang = |p: &mut Party| p.hangup.as_mut().and_then(|rx| rx.try_recv().ok());
        if caller_hooks.get().completion.is_none()
            && let Some(cause) = hang(&mut session.caller)
        {
            hangup_cause = Some(cause);
            break;
        }
        if callee_hooks.get().completion.is_none()
            && let Some(cause) = hang(&mut session.callee)
        {
            hangup_cause = Some(cause);
            break;
        }
        if *session.closing.borrow() {
            hangup_cause = Some("SYSTEM_SHUTDOWN".into());
            break;
        }
        // The far end of a `hangup_after_pages` number hangs up once it has its pages.
        if let Machine::HangupAfterPages(n) = session.far
            && callee_hooks.get().pages >= n
        {
            let at = *far_page_at.get_or_insert(now);
            if caller_hooks.get().pages >= n || now - at >= HANGUP_AFTER_PAGE_SAMPLES {
                break;
            }
        }

        // One frame of line time.
        match (&caller, &callee) {
            (Terminal::Audio(tx), rx) => {
                a.fill(0);
                b.fill(0);
                if caller_hooks.get().completion.is_none() {
                    tx.tx(&mut a);
                }
                if let Some(Terminal::Audio(rx)) = rx
                    && callee_hooks.get().completion.is_none()
                {
                    rx.tx(&mut b);
                }
                if let Transport::Audio(law) = session.transport {
                    compand(law, &mut a);
                    compand(law, &mut b);
                }
                if let Some(Terminal::Audio(rx)) = rx
                    && callee_hooks.get().completion.is_none()
                {
                    rx.rx(&mut a);
                }
                if caller_hooks.get().completion.is_none() {
                    tx.rx(&mut b);
                }
            }
            (Terminal::T38(tx), rx) => {
                if caller_hooks.get().completion.is_none() {
                    tx.send_timeout(FRAME as i32);
                }
                if let Some(Terminal::T38(rx)) = rx
                    && callee_hooks.get().completion.is_none()
                {
                    rx.send_timeout(FRAME as i32);
                }
                let far_alive = rx.is_some() && callee_hooks.get().completion.is_none();
                while let Some((seq, p)) = pop(&mut caller_packets) {
                    if far_alive
                        && let Some(Terminal::T38(rx)) = rx
                        && let Ok(core) = rx.get_t38_core_state()
                    {
                        let _ = core.rx_ifp_packet(&p, seq);
                    }
                }
                let near_alive = caller_hooks.get().completion.is_none();
                while let Some((seq, p)) = pop(&mut callee_packets) {
                    if near_alive && let Ok(core) = tx.get_t38_core_state() {
                        let _ = core.rx_ifp_packet(&p, seq);
                    }
                }
            }
        }
        now += FRAME as u64;
        deliver(&session.caller, caller_hooks.take_pending());
        deliver(&session.callee, callee_hooks.take_pending());

        // When one side is done the call is over once the other finishes or the grace ends.
        if caller_hooks.get().completion.is_some() {
            caller_done_at.get_or_insert(now);
        }
        if callee_hooks.get().completion.is_some() || callee.is_none() && caller_done_at.is_some() {
            callee_done_at.get_or_insert(now);
        }
        match (caller_done_at, callee_done_at) {
            (Some(_), Some(_)) => break,
            (Some(at), None) | (None, Some(at)) if now - at >= GRACE_SAMPLES => break,
            _ => {}
        }
        if now >= max_samples {
            hangup_cause = Some("ALLOTTED_TIMEOUT".into());
            break;
        }
        if session.line_time == LineTime::Realtime {
            let due = started + Duration::from_micros(now * 1_000_000 / SAMPLE_RATE);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }

    // The line drops: whoever has not finished gets phase E now (49 if mid-transfer).
    // SAFETY: live terminals; t30_terminate is a no-op after phase E.
    unsafe {
        sys::t30_terminate(caller.t30());
        if let Some(t) = &callee {
            sys::t30_terminate(t.t30());
        }
    }
    deliver(&session.caller, caller_hooks.take_pending());
    deliver(&session.callee, callee_hooks.take_pending());

    let code = caller_hooks.get().completion.unwrap_or(49);
    let cause = hangup_cause.as_deref().unwrap_or("NORMAL_CLEARING");
    let caller_result = result(caller_hooks.get(), code, cause, t38, None);
    let callee_result = callee.as_ref().map(|_| {
        let code = callee_hooks.get().completion.unwrap_or(49);
        let file = session.received.is_file().then(|| session.received.clone());
        result(callee_hooks.get(), code, cause, t38, file)
    });
    // Free the terminals (and close the received file) before reporting it.
    drop(caller);
    drop(callee);
    deliver(&session.caller, vec![FaxEvent::Finished(caller_result)]);
    if let Some(r) = callee_result {
        deliver(&session.callee, vec![FaxEvent::Finished(r)]);
    }
    drop(caller_hooks);
    drop(callee_hooks);
    drop(caller_packets);
    drop(callee_packets);
}
