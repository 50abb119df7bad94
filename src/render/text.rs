//! Small text helpers shared by the renderers (plan, rollback, reconcile):
//! making data safe for a terminal or a Markdown comment, and number formats.

use std::borrow::Cow;

/// Longest note, warning or name shown in Markdown, in characters.
pub(crate) const MAX_TEXT: usize = 300;

/// `s` with control characters escaped (`\n`, `\u{1b}`, ...), so that names read
/// from providers cannot break lines or send escape sequences to the terminal.
pub(crate) fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `"s"`, with quotes and backslashes inside escaped.
pub(crate) fn quoted(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                q.push('\\');
                q.push(c);
            }
            c if c.is_control() => q.extend(c.escape_default()),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// `s` cut to [`MAX_TEXT`] characters, with `…` when cut.
pub(crate) fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_TEXT) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// Plain text made inert for inline Markdown, also inside a table cell or after
/// a list marker: every character GitHub Flavored Markdown gives a meaning to
/// inside a line (emphasis, code, links, HTML, entities, tables, strikethrough,
/// math) is backslash-escaped, as is a leading block marker (`#`, `-`, `+`, `1.`);
/// line breaks and other control characters become spaces so the value stays on
/// its line.
pub(crate) fn md_text(s: &str) -> String {
    let s = s.trim_start();
    let mut out = String::with_capacity(s.len() + 8);
    // A leading `#`, `-` or `+`, or the `.`/`)` of a leading number, would start
    // a heading or a list.
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let block_marker = match s.as_bytes().first() {
        Some(b'#' | b'-' | b'+') => Some(0),
        Some(b'0'..=b'9') if matches!(s.as_bytes().get(digits), Some(b'.' | b')')) => Some(digits),
        _ => None,
    };
    for (i, c) in s.char_indices() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '$' | '&' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => {
                if block_marker == Some(i) {
                    out.push('\\');
                }
                out.push(c);
            }
        }
    }
    out
}

/// `s` as an inline code span, safe inside a table cell: the fence is longer
/// than any run of backticks inside, `|` is escaped (GitHub unescapes `\|` in
/// table cells even inside code), and control characters become spaces. Code
/// spans also keep `@mentions`, `#refs` and emphasis from being interpreted.
pub(crate) fn md_code(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    let body: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().replace('|', "\\|");
    let mut longest = 0;
    let mut run = 0;
    for c in body.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    // CommonMark strips one space from each end of a code span when both ends
    // have one (unless it is all spaces), and a backtick at an end would merge
    // with the fence: pad with a space on each side in those cases.
    let strips = body.starts_with(' ') && body.ends_with(' ') && body.trim() != "";
    let space = if strips || body.starts_with('`') || body.ends_with('`') { " " } else { "" };
    format!("{fence}{space}{body}{space}{fence}")
}
