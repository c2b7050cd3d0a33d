//! ESL codec benchmark (figures for the notes, nothing asserted): how many FreeSWITCH events
//! faxd's decoder frames and types per second, replaying the server frames captured from a
//! real FreeSWITCH 1.10.12 (`tests/fixtures/esl/`, 160 frames, 55 of them events of 0.7 to
//! 5.5 KB) through one decoder in 4 KiB reads, as a socket would deliver them.
//!
//! `cargo run --release -p faxd --example esl_bench -- [rounds]`

#[path = "../tests/esl_captures/mod.rs"]
mod esl_captures;

use std::time::Instant;

use faxd::gateway::esl::{Decoder, Frame, SpandspEvent};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u = unsafe { std::mem::zeroed::<libc::rusage>() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

#[derive(Default)]
struct Counts {
    frames: u64,
    events: u64,
    fax_events: u64,
}

/// Decodes and types the whole stream once; with `fax`, also reads the spandsp events.
fn replay(stream: &[u8], fax: bool, counts: &mut Counts) {
    let mut d = Decoder::default();
    for chunk in stream.chunks(4096) {
        d.feed(chunk);
        while let Ok(Some(raw)) = d.next_frame() {
            counts.frames += 1;
            match Frame::parse(raw) {
                Ok(Frame::Event(e)) => {
                    counts.events += 1;
                    if fax && SpandspEvent::from_event(&e).is_some() {
                        counts.fax_events += 1;
                    }
                }
                Ok(Frame::ConnectReply(_)) => counts.events += 1,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
}

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000);
    let stream = esl_captures::both_server_streams();
    println!("stream: {} bytes per round, {rounds} rounds", stream.len());
    for fax in [false, true] {
        let mut counts = Counts::default();
        replay(&stream, fax, &mut Counts::default());
        let (wall, cpu) = (Instant::now(), cpu_seconds());
        for _ in 0..rounds {
            replay(&stream, fax, &mut counts);
        }
        let cpu = cpu_seconds() - cpu;
        let wall = wall.elapsed().as_secs_f64();
        let mb = (stream.len() as u64 * rounds) as f64 / 1e6;
        println!(
            "{}: {} frames ({} events{}) in {wall:.2} s wall, {cpu:.2} s CPU: {:.0} events/s, {:.0} frames/s, {:.0} MB/s",
            if fax {
                "framing + typing + spandsp view"
            } else {
                "framing + typing"
            },
            counts.frames,
            counts.events,
            if fax {
                format!(", {} spandsp", counts.fax_events)
            } else {
                String::new()
            },
            counts.events as f64 / cpu,
            counts.frames as f64 / cpu,
            mb / cpu,
        );
    }
}
