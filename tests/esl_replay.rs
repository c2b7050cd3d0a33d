//! Replays the frames captured from a real FreeSWITCH 1.10.12 (`tests/fixtures/esl/`)
//! through faxd's ESL codec: every server frame is framed and typed byte for byte in any
//! chunking, the captured client frames are written again by the encoder, and the 20
//! originate probes check that faxd's value escaping makes FreeSWITCH store exactly the
//! value meant.

mod esl_captures;

use std::collections::BTreeMap;

use esl_captures::{Captured, FIRST, SECOND, capture, server_stream};
use faxd::gateway::esl::command::{Command, Originate, SendMsg, escape_value, http_get};
use faxd::gateway::esl::spandsp::{self, FaxDirection, SpandspEvent};
use faxd::gateway::esl::{
    ApiOutcome, Decoder, Disposition, Event, EventFormat, Frame, FrameError, Limits, RawFrame,
};
use faxd::gateway::{FaxEvent, FaxResult};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// Decodes `chunks` fed one after the other, draining frames after each.
fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<RawFrame> {
    let mut d = Decoder::default();
    let mut out = Vec::new();
    for chunk in chunks {
        d.feed(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => out.push(f),
                Ok(None) => break,
                Err(e) => panic!("frame {}: {e}", out.len() + 1),
            }
        }
    }
    assert!(d.at_frame_boundary(), "the stream ended inside a frame");
    assert_eq!(d.buffered(), 0);
    out
}

fn typed(raw: RawFrame) -> Frame {
    match Frame::parse(raw) {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    }
}

/// The server frames of a capture, typed, with their line numbers.
fn server_frames(frames: &[Captured]) -> BTreeMap<usize, Frame> {
    let lines: Vec<usize> = frames.iter().filter(|f| !f.client).map(|f| f.n).collect();
    let raw = decode_chunks([server_stream(frames).as_slice()]);
    assert_eq!(raw.len(), lines.len());
    lines.into_iter().zip(raw.into_iter().map(typed)).collect()
}

fn event(frames: &BTreeMap<usize, Frame>, n: usize) -> &Event {
    match &frames[&n] {
        Frame::Event(e) => e,
        other => panic!("line {n} is not an event: {other:?}"),
    }
}

#[test]
fn every_server_frame_decodes_alone_to_exactly_one_frame() {
    for name in [FIRST, SECOND] {
        for f in capture(name).iter().filter(|f| !f.client) {
            let mut d = Decoder::default();
            d.feed(f.data.as_bytes());
            let one = d.next_frame();
            assert!(matches!(one, Ok(Some(_))), "{name}:{}: {one:?}", f.n);
            assert_eq!(d.next_frame(), Ok(None), "{name}:{}", f.n);
            assert!(d.at_frame_boundary(), "{name}:{}", f.n);
            assert_eq!(d.buffered(), 0, "{name}:{}", f.n);
        }
    }
}

#[test]
fn the_server_streams_decode_the_same_in_any_chunking() {
    for name in [FIRST, SECOND] {
        let stream = server_stream(&capture(name));
        let whole = decode_chunks([stream.as_slice()]);

        let bytewise = decode_chunks(stream.chunks(1));
        assert_eq!(bytewise, whole, "{name}: one byte at a time");

        for seed in 0..40u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut chunks = Vec::new();
            let mut rest = stream.as_slice();
            while !rest.is_empty() {
                let max = if seed % 2 == 0 { 16 } else { 8192 };
                let take = rng.random_range(1..=max).min(rest.len());
                let (chunk, tail) = rest.split_at(take);
                chunks.push(chunk);
                rest = tail;
            }
            assert_eq!(decode_chunks(chunks), whole, "{name}: seed {seed}");
        }
    }
}

#[test]
fn every_frame_survives_a_cut_at_any_of_its_framing_bytes() {
    // Two chunks cut at every offset of each frame's envelope and of its last bytes (and
    // every 61st byte in between): wherever the socket splits a frame, the same frame.
    for name in [FIRST, SECOND] {
        for f in capture(name).iter().filter(|f| !f.client) {
            let bytes = f.data.as_bytes();
            let whole = decode_chunks([bytes]);
            let cuts =
                (0..=bytes.len()).filter(|&k| k < 160 || k + 160 > bytes.len() || k % 61 == 0);
            for k in cuts {
                let (a, b) = bytes.split_at(k);
                assert_eq!(decode_chunks([a, b]), whole, "{name}:{} cut at {k}", f.n);
            }
        }
    }
}

#[test]
fn frame_types_match_the_captures() {
    let mut counts = BTreeMap::new();
    for name in [FIRST, SECOND] {
        for frame in server_frames(&capture(name)).into_values() {
            let kind = match frame {
                Frame::AuthRequest => "auth",
                Frame::CommandReply(_) => "reply",
                Frame::ApiResponse(_) => "api",
                Frame::Event(e) if e.format == EventFormat::Json => "json event",
                Frame::Event(_) => "plain event",
                Frame::ConnectReply(_) => "connect",
                Frame::DisconnectNotice(_) => "disconnect",
                Frame::RudeRejection(_) => "rude",
                Frame::Log(_) => "log",
                Frame::Unknown(_) => "unknown",
            };
            *counts.entry((name, kind)).or_insert(0) += 1;
        }
    }
    let expected = BTreeMap::from([
        ((FIRST, "auth"), 2),
        ((FIRST, "reply"), 18),
        ((FIRST, "api"), 2),
        ((FIRST, "plain event"), 23),
        ((FIRST, "json event"), 1),
        ((FIRST, "connect"), 1),
        ((FIRST, "disconnect"), 3),
        ((SECOND, "reply"), 15),
        ((SECOND, "api"), 65),
        ((SECOND, "plain event"), 30),
    ]);
    assert_eq!(counts, expected);
}

#[test]
fn replies_and_api_responses_carry_their_text() {
    let first = server_frames(&capture(FIRST));
    let reply = |n: usize| match &first[&n] {
        Frame::CommandReply(r) => r.clone(),
        other => panic!("line {n}: {other:?}"),
    };
    assert!(reply(3).is_ok());
    assert_eq!(reply(3).text, "+OK accepted");
    assert_eq!(reply(11).error(), Some("not controlling a session"));
    assert_eq!(
        reply(13).text,
        "+OK filter added. [Unique-ID]=[00000000-0000-0000-0000-000000000000]"
    );
    assert_eq!(
        reply(19).job_uuid(),
        Some("afb6c398-1ebe-4ec3-b6ae-2a39d338737a")
    );
    assert_eq!(
        reply(19).text,
        "+OK Job-UUID: afb6c398-1ebe-4ec3-b6ae-2a39d338737a"
    );
    assert_eq!(reply(54).text, "729a5891-56d1-4cc8-81c1-f1e37432cb53");
    assert!(!reply(54).is_ok() && reply(54).error().is_none());
    let Frame::ApiResponse(status) = &first[&7] else {
        panic!("line 7")
    };
    assert_eq!(status.len(), 336);
    assert!(status.contains("FreeSWITCH (Version 1.10.12-release  64bit) is ready\n"));
    let Frame::ApiResponse(unknown) = &first[&9] else {
        panic!("line 9")
    };
    assert_eq!(
        ApiOutcome::of(unknown),
        ApiOutcome::Err("nosuchcmd Command not found!")
    );

    let second = server_frames(&capture(SECOND));
    let api = |n: usize| match &second[&n] {
        Frame::ApiResponse(body) => body.clone(),
        other => panic!("line {n}: {other:?}"),
    };
    assert_eq!(
        ApiOutcome::of(&api(2)),
        ApiOutcome::Ok("00a148d2-b259-4de8-b182-31756b144c81")
    );
    assert_eq!(api(56), "ACME's FS, Inc.");
    assert_eq!(
        ApiOutcome::of(&api(92)),
        ApiOutcome::Err("DESTINATION_OUT_OF_ORDER")
    );
    assert!(
        matches!(ApiOutcome::of(&api(26)), ApiOutcome::Err(u) if u.starts_with("USAGE: <call url>"))
    );
    assert_eq!(api(122), "\n0 total.\n");
    assert_eq!(
        ApiOutcome::of(&api(164)),
        ApiOutcome::Text("/srv/fs/run/httpcache/82/122715-e955-4352-b12c-d647ceafda19.tiff")
    );
    assert_eq!(
        ApiOutcome::of(&api(170)),
        ApiOutcome::Err("http_get Command not found!")
    );
}

#[test]
fn background_jobs_carry_the_outcome_of_their_command() {
    let first = server_frames(&capture(FIRST));
    let job = event(&first, 22);
    assert_eq!(job.name(), Some("BACKGROUND_JOB"));
    assert_eq!(job.job_uuid(), Some("afb6c398-1ebe-4ec3-b6ae-2a39d338737a"));
    assert_eq!(job.header("Job-Owner-UUID"), None);
    assert_eq!(
        job.job_outcome(),
        ApiOutcome::Ok("5771ef3b-cff5-417a-a6e9-1e2f08578755")
    );
    assert_eq!(
        job.header("Job-Command-Arg"),
        Some(
            "{origination_uuid=5771ef3b-cff5-417a-a6e9-1e2f08578755,fax_ident=+15550100,fax_header='Kazoo rs test',fax_verbose=false,origination_caller_id_number=15550100}loopback/rxfax/default &txfax(/var/spool/faxd/xxxx/in_1page.tif)"
        )
    );
    // The json one (`bgapi status` after `event json`): no argument, body under `_body`.
    let json = event(&first, 38);
    assert_eq!(json.format, EventFormat::Json);
    assert_eq!(
        json.job_uuid(),
        Some("814c7c35-315b-4706-a9bc-a4127d111521")
    );
    assert_eq!(json.header("Job-Command"), Some("status"));
    assert_eq!(json.header("Job-Command-Arg"), None);
    assert_eq!(json.header("FreeSWITCH-IPv6"), Some("fd00::2"));
    assert_eq!(json.body.as_ref().map(String::len), Some(336));

    let second = server_frames(&capture(SECOND));
    let outcomes: Vec<(usize, String, ApiOutcome<'_>)> = second
        .iter()
        .filter_map(|(n, f)| match f {
            Frame::Event(e) if e.name() == Some("BACKGROUND_JOB") => {
                Some((*n, e.job_uuid().unwrap_or("").to_string(), e.job_outcome()))
            }
            _ => None,
        })
        .collect();
    let path82 = "/srv/fs/run/httpcache/82/122715-e955-4352-b12c-d647ceafda19.tiff";
    let path4a = "/srv/fs/run/httpcache/4a/f8a2f1-3504-44e2-a0af-fe1d4689dcc9.tiff";
    assert_eq!(
        outcomes,
        vec![
            (
                129,
                "d236a440-9e64-4cec-9322-51072d685047".into(),
                ApiOutcome::Ok("a3092ec0-6a44-43eb-8b4c-e1c1ab680ec2")
            ),
            (
                147,
                "48a85e21-006c-4ed0-9a69-d43b566868ba".into(),
                ApiOutcome::Err("USER_BUSY")
            ),
            (
                153,
                "3100ae19-e2e2-4448-bf26-5d9ba022b011".into(),
                ApiOutcome::Text(path82)
            ),
            (
                156,
                "061dcdf1-b201-4401-a9e6-9038ac0705f4".into(),
                ApiOutcome::Text(path82)
            ),
            (
                159,
                "81602bb9-c72d-4c24-99f8-d362766374a2".into(),
                ApiOutcome::Text(path82)
            ),
            (
                162,
                "47e9ca46-fd85-41df-a17c-253e983733b3".into(),
                ApiOutcome::Err("http_get Command not found!")
            ),
            (
                178,
                "97532da5-ad15-4e6d-9756-9cd9a750e2b5".into(),
                ApiOutcome::Err("USER_BUSY")
            ),
            (
                187,
                "fb29fa21-f425-4598-8f06-9470b55ab859".into(),
                ApiOutcome::Text("download")
            ),
            (
                189,
                "f993dc62-47e3-4d2a-a55d-8173a9ea6caf".into(),
                ApiOutcome::Text(path4a)
            ),
            (
                190,
                "9ca05a08-e350-4792-b70e-35f500c7dde9".into(),
                ApiOutcome::Text(path4a)
            ),
        ]
    );
    // The busy call ended before its BACKGROUND_JOB: HANGUP_COMPLETE with the SIP status.
    let hangup = event(&second, 177);
    assert_eq!(hangup.name(), Some("CHANNEL_HANGUP_COMPLETE"));
    assert_eq!(
        hangup.unique_id(),
        Some("b12a6e21-566c-4b4a-84f2-b26d1dca0217")
    );
    assert_eq!(hangup.header("Hangup-Cause"), Some("USER_BUSY"));
    assert_eq!(
        hangup.variable("sip_invite_failure_phrase"),
        Some("Busy Here")
    );
    assert_eq!(
        hangup.variable("proto_specific_hangup_cause"),
        Some("sip:486")
    );
    assert!(spandsp::result_from_variables(hangup).is_none());
}

#[test]
fn spandsp_events_give_negotiation_pages_and_result() {
    let second = server_frames(&capture(SECOND));
    let spandsp_events: Vec<SpandspEvent> = second
        .values()
        .filter_map(|f| match f {
            Frame::Event(e) => SpandspEvent::from_event(e),
            _ => None,
        })
        .collect();
    assert_eq!(spandsp_events.len(), 4);
    let SpandspEvent::Negotiated(n) = &spandsp_events[0] else {
        panic!("{:?}", spandsp_events[0])
    };
    assert_eq!(n.direction, FaxDirection::Tx);
    assert_eq!(
        (n.transfer_rate, n.ecm, n.t38_status.as_str()),
        (14_400, true, "off")
    );
    assert_eq!(n.remote_station_id, "+15550199");
    assert_eq!(n.local_station_id, "+15550100");
    assert_eq!(n.total_pages, Some(0));
    for (i, (page, size)) in [(1, 21_446), (2, 21_481)].into_iter().enumerate() {
        let SpandspEvent::Page(p) = &spandsp_events[1 + i] else {
            panic!("{:?}", spandsp_events[1 + i])
        };
        assert_eq!((p.page, p.total_pages, p.image_size), (page, Some(2), size));
        assert_eq!(p.encoding_name, "T.85(L0)");
        assert_eq!(p.image_resolution, "8040x7700");
        assert_eq!(p.bad_rows, 0);
        assert_eq!(
            spandsp_events[1 + i].to_fax_event(),
            FaxEvent::Page {
                page,
                total: 2,
                bad_rows: 0
            }
        );
    }
    let expected = FaxResult {
        success: true,
        hangup_cause: "NORMAL_CLEARING".into(),
        sip_code: 200,
        fax_result_code: 0,
        fax_result_text: "OK".into(),
        transferred_pages: 2,
        total_pages: 2,
        transfer_rate: 14_400,
        ecm_used: true,
        t38_used: false,
        remote_station_id: "+15550199".into(),
        local_station_id: "+15550100".into(),
        bad_rows: 0,
        longest_bad_row_run: 0,
        image_resolution: "8040x7700".into(),
        received_file: None,
    };
    assert_eq!(
        spandsp_events[3],
        SpandspEvent::Finished {
            direction: FaxDirection::Tx,
            result: expected.clone()
        }
    );
    // The A leg's HANGUP_COMPLETE carries the same result in its variables.
    let a_hangup = event(&second, 135);
    assert_eq!(
        a_hangup.unique_id(),
        Some("a3092ec0-6a44-43eb-8b4c-e1c1ab680ec2")
    );
    assert_eq!(spandsp::result_from_variables(a_hangup), Some(expected));

    // First capture: both ends of a one-page fax; the receiver got no total and no size
    // (ECM on the receiving side).
    let first = server_frames(&capture(FIRST));
    let rx = SpandspEvent::from_event(event(&first, 27));
    let Some(SpandspEvent::Finished { direction, result }) = rx.clone() else {
        panic!("{rx:?}")
    };
    assert_eq!(direction, FaxDirection::Rx);
    assert!(result.success);
    assert_eq!(result.remote_station_id, "+15550100");
    assert_eq!((result.transferred_pages, result.total_pages), (1, 1));
    let rx_page = SpandspEvent::from_event(event(&first, 25));
    assert!(
        matches!(rx_page, Some(SpandspEvent::Page(p)) if p.direction == FaxDirection::Rx && p.page == 1 && p.total_pages.is_none())
    );
    let tx = SpandspEvent::from_event(event(&first, 31)).map(|e| e.to_fax_event());
    assert!(
        matches!(tx, Some(FaxEvent::Finished(r)) if r.success && r.transfer_rate == 14_400 && r.hangup_cause == "NORMAL_CLEARING")
    );
    let negotiated = SpandspEvent::from_event(event(&first, 24)).map(|e| e.to_fax_event());
    assert_eq!(
        negotiated,
        Some(FaxEvent::Negotiated {
            transfer_rate: 14_400,
            ecm: true,
            remote_station_id: "+15550100".into()
        })
    );
    let complete = event(&first, 33);
    assert_eq!(
        spandsp::application_response(complete),
        Some(("txfax", "_none_"))
    );
    assert!(spandsp::result_from_variables(complete).is_some_and(|r| r.success));
    // Non-fax events are not spandsp events.
    assert!(SpandspEvent::from_event(event(&first, 22)).is_none());
}

#[test]
fn custom_events_start_with_their_subclass_and_decode_it() {
    let first = server_frames(&capture(FIRST));
    let e = event(&first, 31);
    assert_eq!(e.headers.0[0].0, "Event-Subclass");
    assert_eq!(e.subclass(), Some("spandsp::txfaxresult"));
    assert_eq!(e.name(), Some("CUSTOM"));
    assert_eq!(e.unique_id(), Some("5771ef3b-cff5-417a-a6e9-1e2f08578755"));
    assert_eq!(e.variable("fax_header"), Some("Kazoo rs test"));
    assert_eq!(
        e.header("Event-Date-GMT"),
        Some("Thu, 26 Nov 2026 12:22:35 GMT")
    );
    assert_eq!(e.sequence(), Some(463));
    assert_eq!(e.body, None);
}

#[test]
fn the_outbound_connect_reply_is_the_channel_data() {
    let first = server_frames(&capture(FIRST));
    let Frame::ConnectReply(c) = &first[&48] else {
        panic!("line 48: {:?}", first[&48])
    };
    assert_eq!(c.reply_text, "+OK\n");
    assert_eq!(c.socket_mode.as_deref(), Some("async"));
    assert_eq!(c.control.as_deref(), Some("full"));
    assert_eq!(c.channel.name(), Some("CHANNEL_DATA"));
    assert_eq!(
        c.channel.unique_id(),
        Some("729a5891-56d1-4cc8-81c1-f1e37432cb53")
    );
    assert_eq!(
        c.channel.variable("current_application_data"),
        Some("127.0.0.1:8084 async full")
    );
    assert_eq!(c.channel.header("Content-Type"), None);
    assert_eq!(
        c.channel.header("Channel-Destination-Number"),
        Some("socket")
    );

    let notices: Vec<_> = first
        .iter()
        .filter_map(|(n, f)| match f {
            Frame::DisconnectNotice(d) => Some((*n, d.clone())),
            _ => None,
        })
        .collect();
    let lines: Vec<usize> = notices.iter().map(|(n, _)| *n).collect();
    assert_eq!(lines, vec![41, 68, 71]);
    let (_, goodbye) = &notices[0];
    assert_eq!(goodbye.disposition, None);
    assert_eq!(goodbye.text.len(), 67);
    let (_, linger) = &notices[1];
    assert!(linger.lingers());
    assert_eq!(linger.linger_time, Some(-1));
    assert_eq!(linger.channel_name.as_deref(), Some("loopback/socket-b"));
    assert!(linger.text.is_empty());
    let (_, last) = &notices[2];
    assert_eq!(last.disposition, Some(Disposition::Disconnect));
    assert_eq!(
        last.controlled_session_uuid.as_deref(),
        Some("729a5891-56d1-4cc8-81c1-f1e37432cb53")
    );
    assert!(last.text.starts_with("Disconnected, goodbye.\n"));
}

fn built(c: Command) -> String {
    match c.encode() {
        Ok(b) => String::from_utf8(b).expect("utf-8"),
        Err(e) => panic!("{e}"),
    }
}

fn originate(o: Originate) -> String {
    match o.command() {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn bgapi(command: String, job: &str) -> Command {
    Command::BgApi {
        command,
        job_uuid: job.into(),
    }
}

fn api(command: &str) -> Command {
    Command::Api {
        command: command.into(),
    }
}

fn events(format: EventFormat, names: &[&str], custom: &[&str]) -> Command {
    Command::Events {
        format,
        names: names.iter().map(|s| s.to_string()).collect(),
        custom: custom.iter().map(|s| s.to_string()).collect(),
    }
}

fn get(url: &str, prefetch: bool) -> String {
    http_get(url, prefetch).expect("http_get")
}

#[test]
fn client_frames_are_written_again_byte_for_byte() {
    use EventFormat::{Json, Plain};
    let spandsp_all = [
        "spandsp::txfaxresult",
        "spandsp::rxfaxresult",
        "spandsp::txfaxpageresult",
        "spandsp::rxfaxpageresult",
        "spandsp::txfaxnegociateresult",
        "spandsp::rxfaxnegociateresult",
    ];
    let spandsp_tx = [
        "spandsp::txfaxresult",
        "spandsp::txfaxnegociateresult",
        "spandsp::txfaxpageresult",
    ];
    let zero = "00000000-0000-0000-0000-000000000000";
    let first: Vec<(usize, Command)> = vec![
        (
            2,
            Command::Auth {
                password: "ClueCon".into(),
            },
        ),
        (
            4,
            events(
                Plain,
                &[
                    "BACKGROUND_JOB",
                    "CHANNEL_EXECUTE_COMPLETE",
                    "CHANNEL_HANGUP_COMPLETE",
                ],
                &spandsp_all,
            ),
        ),
        (6, api("status")),
        (8, api("nosuchcmd")),
        (10, Command::Linger { seconds: None }),
        (
            12,
            Command::Filter {
                header: "Unique-ID".into(),
                value: zero.into(),
            },
        ),
        (
            14,
            Command::FilterDelete {
                header: "Unique-ID".into(),
                value: Some(zero.into()),
            },
        ),
        (16, Command::FilterDeleteAll),
        (
            18,
            bgapi(
                originate(
                    Originate::txfax(
                        "loopback/rxfax/default",
                        "/var/spool/faxd/xxxx/in_1page.tif",
                    )
                    .var("origination_uuid", "5771ef3b-cff5-417a-a6e9-1e2f08578755")
                    .var("fax_ident", "+15550100")
                    .var("fax_header", "Kazoo rs test")
                    .var("fax_verbose", "false")
                    .var("origination_caller_id_number", "15550100"),
                ),
                "afb6c398-1ebe-4ec3-b6ae-2a39d338737a",
            ),
        ),
        (32, events(Json, &["BACKGROUND_JOB"], &[])),
        (39, Command::Exit),
        (
            43,
            Command::Auth {
                password: "ClueCon".into(),
            },
        ),
        (47, Command::Connect),
        (
            49,
            Command::MyEvents {
                uuid: None,
                format: None,
            },
        ),
        (51, Command::Linger { seconds: None }),
        (
            53,
            Command::GetVar {
                name: "uuid".into(),
            },
        ),
        (
            55,
            Command::SendMsg {
                uuid: None,
                msg: SendMsg::Execute {
                    app: "answer".into(),
                    arg: None,
                    event_uuid: Some("11111111-2222-3333-4444-555555555555".into()),
                    event_lock: false,
                },
            },
        ),
        (
            60,
            Command::SendMsg {
                uuid: None,
                msg: SendMsg::Hangup {
                    cause: "NORMAL_CLEARING".into(),
                },
            },
        ),
        (69, Command::Exit),
        (72, Command::Exit),
    ];
    // `bgapi` without a Job-UUID: faxd always chooses the Job-UUID, so it never writes
    // these two; the originate inside the second one is still faxd's.
    let first_not_built = [36, 45];
    check_client_frames(FIRST, first, &first_not_built);
    let first_frames = capture(FIRST);
    let plain_45 = &first_frames[44].data;
    assert_eq!(
        plain_45,
        &format!(
            "bgapi {}\n\n",
            originate(Originate::app("loopback/socket/default", "park", ""))
        )
    );

    let job = |n: usize, id: &str, command: String| (n, bgapi(command, id));
    let url = "http://127.0.0.1:18777/x.tiff";
    let url3 = "http://127.0.0.1:18779/x.tiff";
    let mut second: Vec<(usize, Command)> = vec![
        (121, api("show channels")),
        (
            123,
            events(
                Plain,
                &[
                    "CHANNEL_ANSWER",
                    "CHANNEL_HANGUP_COMPLETE",
                    "BACKGROUND_JOB",
                ],
                &spandsp_tx,
            ),
        ),
        job(
            125,
            "d236a440-9e64-4cec-9322-51072d685047",
            originate(
                Originate::txfax("loopback/rxfax/default", "/srv/fs/scratch/x.tiff")
                    .var("origination_uuid", "a3092ec0-6a44-43eb-8b4c-e1c1ab680ec2")
                    .var("fax_ident", "+15550100")
                    .var("fax_header", "ACME's FS, Inc."),
            ),
        ),
        (
            136,
            events(
                Plain,
                &[
                    "CHANNEL_CREATE",
                    "CHANNEL_ANSWER",
                    "CHANNEL_HANGUP",
                    "CHANNEL_HANGUP_COMPLETE",
                    "CHANNEL_DESTROY",
                    "BACKGROUND_JOB",
                ],
                &spandsp_tx,
            ),
        ),
        job(
            138,
            "48a85e21-006c-4ed0-9a69-d43b566868ba",
            originate(
                Originate::txfax("loopback/busy/default", "/srv/fs/scratch/x.tiff")
                    .var("origination_uuid", "38a728a5-ce43-4609-b34a-3c014acaacd0")
                    .var("fax_ident", "+15550100"),
            ),
        ),
        (149, events(Plain, &["BACKGROUND_JOB"], &[])),
        job(151, "3100ae19-e2e2-4448-bf26-5d9ba022b011", get(url, true)),
        job(154, "061dcdf1-b201-4401-a9e6-9038ac0705f4", get(url, true)),
        job(157, "81602bb9-c72d-4c24-99f8-d362766374a2", get(url, false)),
        job(
            160,
            "47e9ca46-fd85-41df-a17c-253e983733b3",
            get("http://127.0.0.1:18777/missing.tiff", true),
        ),
        (163, api(&get(url, true))),
        (165, api(&get("http://127.0.0.1:18778/missing.tiff", true))),
        (167, api(&get("http://127.0.0.1:18778/x.tiff", false))),
        (169, api(&get("http://127.0.0.1:1/x.tiff", false))),
        (
            171,
            events(
                Plain,
                &[
                    "CHANNEL_CREATE",
                    "CHANNEL_ANSWER",
                    "CHANNEL_HANGUP",
                    "CHANNEL_HANGUP_COMPLETE",
                    "CHANNEL_DESTROY",
                    "BACKGROUND_JOB",
                ],
                &["spandsp::txfaxresult"],
            ),
        ),
        job(
            173,
            "97532da5-ad15-4e6d-9756-9cd9a750e2b5",
            originate(
                Originate::txfax(
                    "sofia/test/sip:15550001234@127.0.0.1:5099",
                    "/srv/fs/scratch/x.tiff",
                )
                .var("origination_uuid", "b12a6e21-566c-4b4a-84f2-b26d1dca0217")
                .var("fax_ident", "+15550100"),
            ),
        ),
        (180, events(Plain, &["BACKGROUND_JOB"], &[])),
        job(182, "f993dc62-47e3-4d2a-a55d-8173a9ea6caf", get(url3, true)),
        job(183, "fb29fa21-f425-4598-8f06-9470b55ab859", get(url3, true)),
        job(
            184,
            "9ca05a08-e350-4792-b70e-35f500c7dde9",
            get(url3, false),
        ),
    ];
    // The probes: faxd writes 7 of the 20 exactly as probed (the others use forms faxd does
    // not write: `^^:` separators, `[…]`/`<…>` blocks, `\s`, or broken quoting); each
    // `uuid_getvar` / `uuid_kill` is an api command.
    let probes = probes();
    let mut not_built = Vec::new();
    for p in &probes {
        if p.faxd_writes_it_as_probed() {
            second.push((p.line, api(&p.faxd_command().unwrap_or_default())));
        } else {
            not_built.push(p.line);
        }
    }
    assert_eq!(
        probes
            .iter()
            .filter(|p| p.faxd_writes_it_as_probed())
            .count(),
        7
    );
    for f in capture(SECOND).iter().filter(|f| f.n < 121 && f.client) {
        if let Some(cmd) = f.data.strip_prefix("api uuid_")
            && let Some(cmd) = cmd.strip_suffix("\n\n")
        {
            let words: Vec<&str> = cmd.split(' ').collect();
            let uuid = words.get(1).copied().unwrap_or("");
            let c = match words.first().copied() {
                Some("getvar") => format!("uuid_getvar {uuid} {}", words.get(2).unwrap_or(&"")),
                _ => format!("uuid_kill {uuid}"),
            };
            second.push((f.n, api(&c)));
        }
    }
    check_client_frames(SECOND, second, &not_built);
}

/// Every client frame of a capture is either written again byte for byte by `built` or
/// listed in `not_built`.
fn check_client_frames(name: &str, built_frames: Vec<(usize, Command)>, not_built: &[usize]) {
    let frames = capture(name);
    let mut covered: Vec<usize> = not_built.to_vec();
    for (n, c) in built_frames {
        let captured = &frames[n - 1];
        assert!(captured.client, "{name}:{n} is not a client frame");
        assert_eq!(built(c), captured.data, "{name}:{n}");
        covered.push(n);
    }
    covered.sort_unstable();
    let clients: Vec<usize> = frames.iter().filter(|f| f.client).map(|f| f.n).collect();
    assert_eq!(covered, clients, "{name}: client frames covered");
}

/// faxd's model of how FreeSWITCH 1.10.12 reads the arguments of `originate` (written
/// from mod_commands, switch_ivr_originate, switch_event_create_brackets and the string
/// splitter of switch_utils.c), checked against the 20 probes below before it is used to
/// judge faxd's escaping.
mod fs_model {
    const ESC: u8 = b'\\';

    fn unescape(c: u8) -> u8 {
        match c {
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b's' => b' ',
            c => c,
        }
    }

    /// One element after splitting: leading spaces skipped, `\x` escapes consumed, quote
    /// pairs removed, unquoted trailing spaces cut. `delim` 0 = the space split.
    fn cleanup(s: &[u8], delim: u8) -> Vec<u8> {
        let mut i = 0;
        while s.get(i) == Some(&b' ') {
            i += 1;
        }
        let mut dest = Vec::new();
        let mut end = None;
        let mut inside = false;
        while i < s.len() {
            let c = s[i];
            let mut escaped = false;
            if c == ESC {
                let next = s.get(i + 1).copied().unwrap_or(0);
                let e = if next == b'\''
                    || next == b'"'
                    || (delim != 0 && next == delim)
                    || next == ESC
                {
                    Some(next)
                } else if unescape(next) != next {
                    Some(unescape(next))
                } else {
                    None
                };
                if let Some(e) = e {
                    i += 1;
                    dest.push(e);
                    end = Some(dest.len());
                    escaped = true;
                }
            }
            if !escaped {
                if c == b'\'' && (inside || s[i + 1..].contains(&b'\'')) {
                    inside = !inside;
                    if inside {
                        end = Some(dest.len());
                    }
                } else {
                    dest.push(c);
                    if c != b' ' || inside {
                        end = Some(dest.len());
                    }
                }
            }
            i += 1;
        }
        if let Some(end) = end {
            dest.truncate(end);
        }
        dest
    }

    fn cstr(buf: &[u8], start: usize) -> &[u8] {
        let len = buf[start..]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(buf.len() - start);
        &buf[start..start + len]
    }

    /// Splits on spaces outside quotes (a quote toggles unconditionally here).
    pub fn split_blank(input: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut buf = input.to_vec();
        let mut starts = Vec::new();
        let (mut state, mut p, mut inside) = (0, 0, false);
        while p < buf.len() && buf[p] != 0 && starts.len() < max {
            match state {
                0 => {
                    starts.push(p);
                    state = 1;
                }
                1 if buf[p] == b' ' => p += 1,
                1 => state = 2,
                2 => {
                    if buf[p] == ESC {
                        p += 1;
                    } else if buf[p] == b'\'' {
                        inside = !inside;
                    } else if buf[p] == b' ' && !inside {
                        buf[p] = 0;
                        state = 3;
                    }
                    p += 1;
                }
                _ if buf[p] == b' ' => p += 1,
                _ => state = 0,
            }
        }
        starts.iter().map(|&s| cleanup(cstr(&buf, s), 0)).collect()
    }

    /// Splits on `delim` outside quotes (`^^<c>` first switches the delimiter).
    pub fn split(input: &[u8], delim: u8, max: usize) -> Vec<Vec<u8>> {
        let (input, delim) = match input {
            [b'^', b'^', d, _, ..] => (&input[3..], *d),
            _ => (input, delim),
        };
        if delim == b' ' {
            return split_blank(input, max);
        }
        let mut buf = input.to_vec();
        let mut starts = Vec::new();
        let (mut finding, mut p, mut inside) = (false, 0, false);
        while p < buf.len() && buf[p] != 0 && starts.len() < max {
            if !finding {
                starts.push(p);
                finding = true;
                continue;
            }
            if buf[p] == ESC {
                p += 1;
            } else if buf[p] == b'\'' && (inside || cstr(&buf, p + 1).contains(&b'\'')) {
                inside = !inside;
            } else if buf[p] == delim && !inside {
                buf[p] = 0;
                finding = false;
            }
            p += 1;
        }
        starts
            .iter()
            .map(|&s| cleanup(cstr(&buf, s), delim))
            .collect()
    }

    fn end_paren(s: &[u8], open: u8, close: u8) -> Option<usize> {
        if s.first() != Some(&open) {
            return None;
        }
        let mut depth = 1;
        for (i, &c) in s.iter().enumerate().skip(1) {
            if c == open && open != close {
                depth += 1;
            } else if c == close {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
        }
        None
    }

    #[derive(Debug, PartialEq, Eq)]
    pub enum Outcome {
        /// The call was placed with these channel variables.
        Stored(Vec<(String, String)>),
        /// `-USAGE: …`
        Usage,
        /// `-ERR DESTINATION_OUT_OF_ORDER` (the variable block does not parse).
        OutOfOrder,
    }

    /// What `originate <args>` does with its variable blocks. `[…]` leg blocks are read
    /// like `{…}` blocks (enough for the single-leg probes).
    pub fn originate(args: &str) -> Outcome {
        let argv = split_blank(args.as_bytes(), 10);
        if argv.len() < 2 || argv.len() > 7 {
            return Outcome::Usage;
        }
        let mut data: &[u8] = &argv[0];
        let mut vars: Vec<(String, String)> = Vec::new();
        for (open, close) in [(b'<', b'>'), (b'{', b'}'), (b'[', b']')] {
            while data.first() == Some(&open) {
                let Some(end) = end_paren(data, open, close) else {
                    return Outcome::OutOfOrder;
                };
                let mut inner = &data[1..end];
                let mut delim = b',';
                if let [b'^', b'^', d, ..] = inner {
                    delim = *d;
                    inner = &inner[3..];
                }
                for var in split(inner, delim, 1024) {
                    let kv = split(&var, b'=', 2);
                    if let [k, v] = kv.as_slice()
                        && !v.is_empty()
                    {
                        let k = String::from_utf8_lossy(k).into_owned();
                        let v = String::from_utf8_lossy(v).into_owned();
                        vars.retain(|(name, _)| *name != k);
                        vars.push((k, v));
                    }
                }
                data = &data[end + 1..];
            }
        }
        Outcome::Stored(vars)
    }
}

/// One captured originate probe: its arguments and what FreeSWITCH did.
struct Probe {
    line: usize,
    args: String,
    /// `Some(stored values read back with uuid_getvar)` if the call was placed, else the
    /// error body.
    outcome: Result<Vec<(String, String)>, String>,
}

impl Probe {
    fn args_with_command(&self) -> String {
        format!("originate {}", self.args)
    }

    /// What faxd writes for the probed values, in the probe's order.
    fn faxd_command(&self) -> Option<String> {
        let stored = self.outcome.as_ref().ok()?;
        let mut stored = stored.clone();
        stored.sort_by_key(|(k, _)| self.args.find(&format!("{k}=")));
        let o = stored.iter().fold(
            Originate::app("loopback/park/default", "park", ""),
            |o, (k, v)| o.var(k, v),
        );
        o.command().ok()
    }

    fn faxd_writes_it_as_probed(&self) -> bool {
        self.faxd_command() == Some(self.args_with_command())
    }
}

/// The 20 probes of the second capture (lines 1–122), in order.
fn probes() -> Vec<Probe> {
    let frames = capture(SECOND);
    let mut probes: Vec<Probe> = Vec::new();
    let mut i = 0;
    while i + 1 < frames.len() && frames[i].n < 121 {
        let (cmd, answer) = (&frames[i], &frames[i + 1]);
        assert!(cmd.client && !answer.client, "line {}", cmd.n);
        let body = decode_chunks([answer.data.as_bytes()])
            .pop()
            .map(|f| String::from_utf8_lossy(&f.body).into_owned())
            .expect("an api response");
        let text = cmd.data.trim_end_matches('\n');
        if let Some(args) = text.strip_prefix("api originate ") {
            let outcome = if body.starts_with("+OK ") {
                Ok(Vec::new())
            } else {
                Err(body)
            };
            probes.push(Probe {
                line: cmd.n,
                args: args.to_string(),
                outcome,
            });
        } else if let Some(rest) = text.strip_prefix("api uuid_getvar ") {
            let var = rest.split(' ').nth(1).expect("a variable name");
            if let Some(Probe {
                outcome: Ok(stored),
                ..
            }) = probes.last_mut()
            {
                stored.push((var.to_string(), body));
            }
        }
        i += 2;
    }
    probes
}

#[test]
fn the_freeswitch_model_reproduces_all_twenty_probes() {
    let probes = probes();
    assert_eq!(probes.len(), 20);
    for p in &probes {
        let model = fs_model::originate(&p.args);
        match (&p.outcome, &model) {
            (Ok(read_back), fs_model::Outcome::Stored(vars)) => {
                assert!(!read_back.is_empty(), "line {}", p.line);
                for (name, value) in read_back {
                    let stored = vars.iter().find(|(k, _)| k == name).map(|(_, v)| v);
                    assert_eq!(stored, Some(value), "line {}: {}", p.line, p.args);
                }
            }
            (Err(body), fs_model::Outcome::Usage) => {
                assert!(body.starts_with("-USAGE: "), "line {}", p.line)
            }
            (Err(body), fs_model::Outcome::OutOfOrder) => {
                assert_eq!(body, "-ERR DESTINATION_OUT_OF_ORDER\n", "line {}", p.line)
            }
            _ => panic!(
                "line {}: {} → {:?}, model {model:?}",
                p.line, p.args, p.outcome
            ),
        }
    }
    let failures = probes.iter().filter(|p| p.outcome.is_err()).count();
    assert_eq!(failures, 3);
}

#[test]
fn faxd_escaping_stores_exactly_every_probed_value() {
    for p in probes() {
        let Ok(stored) = &p.outcome else { continue };
        let command = p.faxd_command().expect("faxd writes every probed value");
        let args = command.strip_prefix("originate ").expect("originate");
        let fs_model::Outcome::Stored(vars) = fs_model::originate(args) else {
            panic!("line {}: {command} is not placed", p.line)
        };
        let by_name = |v: &[(String, String)]| v.iter().cloned().collect::<BTreeMap<_, _>>();
        assert_eq!(
            by_name(&vars),
            by_name(stored),
            "line {}: {command}",
            p.line
        );
    }
    // The captured txfax call's header, as written by faxd and stored by FreeSWITCH.
    let second = server_frames(&capture(SECOND));
    assert_eq!(
        event(&second, 130).variable("fax_header"),
        Some("ACME's FS, Inc.")
    );
}

/// Values heavy in the characters FreeSWITCH's splitter treats specially.
fn awkward_value() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "'", ",", "\\", " ", "\"", "=", "{", "}", "^^", ":", "s", "n", "t", "a", "Z", "%", "é",
        "\t", "[", "]", "<", ">", "|", "&", "(", ")", "!", "0",
    ]);
    prop::collection::vec(pieces, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn any_value_faxd_accepts_is_stored_exactly(v in awkward_value(), w in awkward_value()) {
        for value in [&v, &w] {
            match escape_value(value, false) {
                Ok(_) => {}
                Err(e) => {
                    let refusable = value.is_empty()
                        || value.starts_with(' ')
                        || value.ends_with(' ')
                        || value.contains(['{', '}'])
                        || value.chars().any(char::is_control);
                    prop_assert!(refusable, "{value:?} refused: {e}");
                    return Ok(());
                }
            }
        }
        let command = Originate::txfax("loopback/rxfax/default", "/tmp/x.tiff")
            .var("fax_header", &v)
            .var("fax_ident", &w)
            .var("fax_verbose", "false")
            .command()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let args = command.strip_prefix("originate ").unwrap_or("");
        prop_assert_eq!(
            fs_model::originate(args),
            fs_model::Outcome::Stored(vec![
                ("fax_header".into(), v.clone()),
                ("fax_ident".into(), w.clone()),
                ("fax_verbose".into(), "false".into()),
            ]),
            "{}", command
        );
    }
}

#[test]
fn decoder_limits_hold_on_the_captured_frames() {
    // The largest captured header block and body fit the defaults with room to spare, and a
    // limit below a real frame is reported, not overrun.
    let stream = server_stream(&capture(SECOND));
    let mut d = Decoder::new(Limits {
        max_header_block: 4096,
        max_body: 4096,
    });
    d.feed(&stream);
    let mut n = 0;
    let err = loop {
        match d.next_frame() {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("no frame over 4096 bytes?"),
            Err(e) => break e,
        }
    };
    assert_eq!(n, 69, "frames before line 133, the first body over 4 KiB");
    assert_eq!(
        err,
        FrameError::BodyTooLong {
            length: 5029,
            limit: 4096
        }
    );
}
