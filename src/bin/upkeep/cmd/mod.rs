//! One function per command: open what it needs, call the library, print the result (through
//! `print.rs`), return the exit code. One file per group of commands.

pub mod fleet;
pub mod publisher;
pub mod run;
pub mod site;
