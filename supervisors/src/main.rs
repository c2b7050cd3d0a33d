//! The faxd binary.
fn main() {}
