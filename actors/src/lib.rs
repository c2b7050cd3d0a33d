//! faxd actors.
