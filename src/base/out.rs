//! Writing to standard output and standard error without ever failing a run: a reader that
//! went away (`upkeep update --yes | head -3`), a closed terminal or a full disk behind a
//! redirection loses the text, never the run. Rust's `println!` panics on such an error, and a
//! panic in the middle of a swap leaves the site closed; these macros drop the error instead.
//! Every line upkeep prints goes through them (`clippy::print_stdout` and `print_stderr` are
//! denied, so a `println!` does not come back).

use std::io::Write;

/// Write `args` to `w`, dropping any error.
pub fn write(mut w: impl Write, args: std::fmt::Arguments<'_>, newline: bool) {
    let _ = w.write_fmt(args);
    if newline {
        let _ = w.write_all(b"\n");
    }
    let _ = w.flush();
}

/// `println!` that never fails (see [`crate::base::out`]).
#[macro_export]
macro_rules! outln {
    () => { $crate::base::out::write(::std::io::stdout().lock(), format_args!(""), true) };
    ($($t:tt)*) => { $crate::base::out::write(::std::io::stdout().lock(), format_args!($($t)*), true) };
}

/// `print!` that never fails (see [`crate::base::out`]).
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::base::out::write(::std::io::stdout().lock(), format_args!($($t)*), false) };
}

/// `eprintln!` that never fails (see [`crate::base::out`]).
#[macro_export]
macro_rules! errln {
    () => { $crate::base::out::write(::std::io::stderr().lock(), format_args!(""), true) };
    ($($t:tt)*) => { $crate::base::out::write(::std::io::stderr().lock(), format_args!($($t)*), true) };
}

/// `eprint!` that never fails (see [`crate::base::out`]).
#[macro_export]
macro_rules! err {
    ($($t:tt)*) => { $crate::base::out::write(::std::io::stderr().lock(), format_args!($($t)*), false) };
}
