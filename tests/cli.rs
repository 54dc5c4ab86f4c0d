//! The command-line tool, run as a process.
