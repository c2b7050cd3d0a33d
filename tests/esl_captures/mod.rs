//! The FreeSWITCH 1.10.12 frames captured in `tests/fixtures/esl/`, read for the ESL tests and
//! the ESL bench.

#![allow(dead_code)]

pub const FIRST: &str = "freeswitch-1.10.12-capture.jsonl";
pub const SECOND: &str = "freeswitch-1.10.12-capture-2.jsonl";

/// One captured frame; `n` is its line in the file.
pub struct Captured {
    pub n: usize,
    pub client: bool,
    pub data: String,
}

pub fn capture(name: &str) -> Vec<Captured> {
    let path = format!("{}/tests/fixtures/esl/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("read the capture");
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a json line");
            let dir = v["dir"].as_str().expect("dir");
            assert!(dir == "C->S" || dir == "S->C", "line {}: {dir}", i + 1);
            Captured {
                n: i + 1,
                client: dir == "C->S",
                data: v["data"].as_str().expect("data").to_string(),
            }
        })
        .collect()
}

/// Everything FreeSWITCH wrote in a capture, in order, as one byte stream.
pub fn server_stream(frames: &[Captured]) -> Vec<u8> {
    frames
        .iter()
        .filter(|f| !f.client)
        .flat_map(|f| f.data.bytes())
        .collect()
}

/// The server side of both captures as one byte stream.
pub fn both_server_streams() -> Vec<u8> {
    [FIRST, SECOND]
        .iter()
        .flat_map(|name| server_stream(&capture(name)))
        .collect()
}
