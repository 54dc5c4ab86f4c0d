//! `tower-api-keys`: the operators' command-line tool (see the crate's README).

fn main() {}
