//! OPA's `glob.match` patterns (gobwas/glob syntax) as regular expressions:
//! `*` any run of characters but the delimiters, `**` any run at all, `?`
//! one character but a delimiter, `[a-z]` and `[!a-z]` classes, `{a,b}`
//! alternatives (each a pattern), `\` escapes.

/// The anchored regular expression for `pattern` with `delimiters`.
///
/// # Errors
///
/// An unterminated class or alternative.
pub fn to_regex(pattern: &str, delimiters: &[char]) -> Result<String, String> {
    let not_delimiter = if delimiters.is_empty() {
        "(?s:.)".to_owned()
    } else {
        let escaped: String = delimiters
            .iter()
            .map(|c| regex::escape(&c.to_string()))
            .collect();
        format!("[^{escaped}]")
    };
    let mut out = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let end = translate(&chars, 0, &not_delimiter, &mut out, false)?;
    debug_assert_eq!(end, chars.len());
    out.push('$');
    Ok(out)
}

/// Translates from `at` to the end, or (inside `{…}`) to the `,` or `}`
/// that ends this alternative; returns where it stopped.
fn translate(
    chars: &[char],
    mut at: usize,
    not_delimiter: &str,
    out: &mut String,
    in_braces: bool,
) -> Result<usize, String> {
    while at < chars.len() {
        match chars[at] {
            '*' if chars.get(at + 1) == Some(&'*') => {
                out.push_str("(?s:.*)");
                at += 2;
                continue;
            }
            '*' => out.push_str(&format!("{not_delimiter}*")),
            '?' => out.push_str(not_delimiter),
            '\\' => {
                at += 1;
                let escaped = chars.get(at).ok_or("a pattern cannot end in '\\'")?;
                out.push_str(&regex::escape(&escaped.to_string()));
            }
            '[' => at = class(chars, at, out)?,
            '{' => {
                out.push_str("(?:");
                at += 1;
                loop {
                    at = translate(chars, at, not_delimiter, out, true)?;
                    match chars.get(at) {
                        Some(',') => {
                            out.push('|');
                            at += 1;
                        }
                        Some('}') => break,
                        _ => return Err("an alternative '{' is not closed".into()),
                    }
                }
                out.push(')');
            }
            ',' | '}' if in_braces => return Ok(at),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
        at += 1;
    }
    Ok(at)
}

/// A `[…]` class starting at `at`; returns the index of its `]`.
fn class(chars: &[char], at: usize, out: &mut String) -> Result<usize, String> {
    let close = chars[at + 1..]
        .iter()
        .position(|&c| c == ']')
        .map(|i| at + 1 + i)
        .ok_or("a class '[' is not closed")?;
    let mut inner = &chars[at + 1..close];
    out.push('[');
    if inner.first() == Some(&'!') {
        out.push('^');
        inner = &inner[1..];
    }
    for &c in inner {
        if c == '-' {
            out.push('-');
        } else {
            out.push_str(&regex::escape(&c.to_string()));
        }
    }
    out.push(']');
    Ok(close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, delimiters: &[char], text: &str) -> bool {
        regex::Regex::new(&to_regex(pattern, delimiters).unwrap())
            .unwrap()
            .is_match(text)
    }

    #[test]
    fn opas_documented_examples() {
        // From OPA's glob.match reference.
        assert!(matches("*.github.com", &['.'], "api.github.com"));
        assert!(!matches("*.github.com", &['.'], "api.cdn.github.com"));
        assert!(matches("*hub.com", &[], "api.cdn.github.com"));
        assert!(matches("*:github:com", &[':'], "api:github:com"));
        assert!(matches("api.**.com", &['.'], "api.github.com"));
        assert!(matches("api.**.com", &['.'], "api.cdn.github.com"));
        assert!(matches("?at", &['.'], "cat"));
        assert!(!matches("?at", &['.'], "at"));
        assert!(matches("[abc]at", &['.'], "bat"));
        assert!(!matches("[!abc]at", &['.'], "bat"));
        assert!(matches("[a-c]at", &['.'], "cat"));
        assert!(matches("{cat,bat,[fr]at}", &['.'], "rat"));
        assert!(!matches("{cat,bat,[fr]at}", &['.'], "at"));
        assert!(matches("\\*.io", &['.'], "*.io"));
        assert!(!matches("\\*.io", &['.'], "x.io"));
    }

    #[test]
    fn unclosed_patterns_are_errors() {
        assert!(to_regex("[abc", &[]).is_err());
        assert!(to_regex("{a,b", &[]).is_err());
        assert!(to_regex("a\\", &[]).is_err());
    }
}
