//! Property tests of faxd's ESL decoder on hostile input: arbitrary bytes and the captured
//! FreeSWITCH stream (`tests/fixtures/esl/`) with bytes flipped, inserted, deleted and
//! spliced, fed in arbitrary chunks. The decoder must never panic, never hold more than one
//! frame's bound after its frames are taken, and typing whatever it frames must not panic
//! either.

mod esl_captures;

use faxd::gateway::esl::{Decoder, Event, Frame, Limits, urlenc};
use proptest::prelude::*;

const LIMITS: Limits = Limits {
    max_header_block: 4096,
    max_body: 8192,
};

/// What FreeSWITCH's URL encoding never leaves raw (besides controls, spaces and non-ASCII).
const UNSAFE: &[u8] = b"\"#&+:;<=>?@[\\]^`{|}";

/// Feeds `input` cut at `cuts` (offsets, any order), draining and typing frames after each
/// chunk; checks the memory bound. Returns the frames framed before any error.
fn run(input: &[u8], cuts: &[usize]) -> Result<usize, TestCaseError> {
    let mut offsets: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    offsets.push(input.len());
    offsets.sort_unstable();
    let mut d = Decoder::new(LIMITS);
    let mut frames = 0;
    let mut from = 0;
    for to in offsets {
        d.feed(&input[from..to]);
        from = to;
        loop {
            match d.next_frame() {
                Ok(Some(raw)) => {
                    frames += 1;
                    // Typing may reject an event payload; it must not panic.
                    let _ = Frame::parse(raw);
                }
                Ok(None) => break,
                Err(e) => {
                    prop_assert_eq!(d.buffered(), 0);
                    prop_assert_eq!(d.next_frame(), Err(e));
                    return Ok(frames);
                }
            }
        }
        let bound = LIMITS.max_header_block.max(LIMITS.max_body);
        prop_assert!(d.buffered() <= bound, "{} bytes held", d.buffered());
    }
    Ok(frames)
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    /// Copies a range of the stream to another place (frames cut and glued).
    Splice(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to the framing are likelier than others.
    let byte = prop_oneof![
        Just(b'\n'),
        Just(b'\r'),
        Just(b':'),
        Just(b' '),
        Just(b'%'),
        Just(b'9'),
        any::<u8>()
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        (any::<usize>(), prop::collection::vec(byte, 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), any::<usize>(), 1usize..4096)
            .prop_map(|(from, to, n)| Mutation::Splice(from, to, n)),
    ]
}

fn mutate(mut s: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = s.len().max(1);
        match m {
            Mutation::Flip(at, b) => {
                if let Some(x) = s.get_mut(at % len) {
                    *x = *b;
                }
            }
            Mutation::Insert(at, bytes) => {
                let at = at % (s.len() + 1);
                s.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(s.len());
                if at < end {
                    s.drain(at..end);
                }
            }
            Mutation::Splice(from, to, n) => {
                let from = from % len;
                let end = (from + n).min(s.len());
                let piece: Vec<u8> = s.get(from..end).unwrap_or(&[]).to_vec();
                let to = to % (s.len() + 1);
                s.splice(to..to, piece);
            }
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        input in prop::collection::vec(any::<u8>(), 0..20_000),
        cuts in prop::collection::vec(any::<usize>(), 0..64),
    ) {
        run(&input, &cuts)?;
        let _ = Event::from_plain(&input);
        let _ = Event::from_json(&input);
    }

    #[test]
    fn header_shaped_noise_never_panics(
        lines in prop::collection::vec(
            "(Content-Length|Content-Type|Event-Name|X)?: ?[0-9a-z/%+ -]{0,12}\r?\n\r?\n?",
            0..200,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let input = lines.concat().into_bytes();
        run(&input, &cuts)?;
        let _ = Event::from_plain(&input);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn url_encoding_round_trips_and_emits_only_safe_bytes(s in "(?s).{0,40}") {
        let wire = urlenc::encode(&s);
        let safe = wire.bytes().all(|b| b.is_ascii_graphic() && !UNSAFE.contains(&b));
        prop_assert!(safe, "{:?} encoded as {:?}", s, wire);
        // A `%` followed by two uppercase hex digits is copied, as FreeSWITCH does: only
        // such values do not come back.
        let upper_escape = s.as_bytes().windows(3).any(|w| {
            w[0] == b'%' && w[1..].iter().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
        });
        if !upper_escape {
            prop_assert_eq!(urlenc::decode(&wire), s);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn mutated_captures_never_panic_and_stay_bounded(
        mutations in prop::collection::vec(mutation(), 1..12),
        cuts in prop::collection::vec(any::<usize>(), 0..256),
    ) {
        let input = mutate(esl_captures::both_server_streams(), &mutations);
        run(&input, &cuts)?;
    }
}

#[test]
fn every_captured_frame_fits_the_fuzz_limits() {
    // The limits above are tight (the bare CHANNEL_DATA header block is 3.5 KB, the largest
    // event 5.4 KB) but hold every real frame, so the mutated captures reach deep into frames
    // rather than failing at the first one.
    let stream = esl_captures::both_server_streams();
    let mut d = Decoder::new(LIMITS);
    d.feed(&stream);
    let mut frames = 0;
    while let Ok(Some(_)) = d.next_frame() {
        frames += 1;
    }
    assert_eq!(
        frames, 160,
        "every captured server frame fits the fuzz limits"
    );
}
