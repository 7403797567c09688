//! Text that came from a peer (a site's report, a server's answer, a remote's error page) made
//! safe to print on a terminal or write to a log: a control character could move the cursor,
//! rewrite the line above, change the title or hide what follows (escape sequences), and the
//! bidirectional overrides reorder what the reader sees. Each is shown as `?`.

use std::borrow::Cow;

/// Whether `c` would act on a terminal instead of being shown.
fn acts(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every control character but the newline (and every bidirectional override) shown
/// as `?`.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(acts) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(|c| if acts(c) { '?' } else { c }).collect())
}

/// [`printable`] on one line: newlines become spaces (a table cell, a log line).
pub fn one_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\n' || acts(c)) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| match c {
                '\n' => ' ',
                c if acts(c) => '?',
                c => c,
            })
            .collect(),
    )
}

/// Whether `s` holds a character [`printable`] would replace (or a newline, when `lines` is
/// false): what a peer's short fields (a name, a version) must not.
pub fn has_controls(s: &str, lines: bool) -> bool {
    s.chars().any(|c| acts(c) || (!lines && c == '\n'))
}

/// `s` as lines of at most `width` columns for a terminal, the first after `first`, the others
/// after `rest`; a word longer than a line (a path, a command) stays whole, so it can be copied.
pub fn wrap(s: &str, width: usize, first: &str, rest: &str) -> Vec<String> {
    let o = textwrap::Options::new(width)
        .initial_indent(first)
        .subsequent_indent(rest)
        .break_words(false)
        .word_splitter(textwrap::WordSplitter::NoHyphenation);
    textwrap::wrap(s, o)
        .into_iter()
        .map(Cow::into_owned)
        .collect()
}

/// [`wrap`] at 96 columns when standard output is a terminal; one line otherwise, so what a
/// script greps for is never split.
pub fn paragraph(s: &str, first: &str, rest: &str) -> Vec<String> {
    use std::io::IsTerminal;
    match std::io::stdout().is_terminal() {
        true => wrap(s, 96, first, rest),
        false => vec![format!("{first}{s}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_1() {
        assert!(matches!(
            printable("plain text\nsecond line"),
            Cow::Borrowed(_)
        ));
        assert_eq!(printable("red \x1b[31mALERT\x1b[0m"), "red ?[31mALERT?[0m");
        assert_eq!(printable("a\rb\x07c\u{9b}d"), "a?b?c?d");
        assert_eq!(printable("evil\u{202e}txt.exe"), "evil?txt.exe");
    }

    #[test]
    fn one_line_1() {
        assert_eq!(one_line("a\nb\x1b]0;title\x07"), "a b?]0;title?");
        assert!(has_controls("x\ny", false));
        assert!(!has_controls("x\ny", true));
        assert!(has_controls("x\x1by", true));
    }

    #[test]
    fn wrap_keeps_long_words_whole() {
        let p = "/var/www/site/.upkeep/backups/run-1.sql";
        let lines = wrap(&format!("the copy stays in {p} for you"), 24, "  ", "    ");
        assert_eq!(
            lines,
            ["  the copy stays in", &format!("    {p}"), "    for you"]
        );
    }
}
