//! FreeSWITCH event socket (ESL) codec: the bytes faxd exchanges with FreeSWITCH's
//! mod_event_socket, in both modes (faxd connecting to a node, and a node's dialplan `socket`
//! application connecting to faxd). Pure code without I/O: the FreeSWITCH gateway actor owns
//! the sockets and feeds the bytes through here. Wire reference: `spec/freeswitch-esl.md`.
//!
//! - [`frame`]: incremental framing (header block, `Content-Length` body), bounded.
//! - [`message`]: typed server frames (replies, api responses, events, notices) and events.
//! - [`command`]: the commands faxd writes, and the `originate` / `http_get` builders with
//!   FreeSWITCH's value escaping.
//! - [`spandsp`]: mod_spandsp's negotiation, page and result events as faxd's
//!   [`FaxEvent`](crate::gateway::FaxEvent) / [`FaxResult`](crate::gateway::FaxResult).

pub mod command;
pub mod frame;
pub mod message;
pub mod spandsp;
pub mod urlenc;

pub use command::{Command, EncodeError, Originate, SendMsg};
pub use frame::{Decoder, FrameError, Limits, RawFrame};
pub use message::{
    ApiOutcome, ConnectReply, DisconnectNotice, Disposition, Event, EventFormat, Frame, Headers,
    LogLine, MessageError, Reply,
};
pub use spandsp::{FaxDirection, SpandspEvent};
