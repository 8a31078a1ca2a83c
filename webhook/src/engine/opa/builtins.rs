//! The builtins an OPA module may ask the host for (through its
//! `opa_builtinN` imports): those OPA compiles to host calls that policies
//! commonly use. A module that names any other is refused at load, so a
//! policy never fails on one halfway through a request.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use super::glob;
use super::value::Value;

/// A builtin the host implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `sprintf(format, args)`, with Go's verbs as OPA has them.
    Sprintf,
    /// `trace(note)`: a log line; always true.
    Trace,
    /// `time.now_ns()`: wall-clock nanoseconds since the epoch.
    NowNs,
    /// `regex.match(pattern, value)`.
    RegexMatch,
    /// `glob.match(pattern, delimiters, value)`.
    GlobMatch,
}

/// Every builtin name the host answers.
pub const NAMES: &[&str] = &[
    "sprintf",
    "trace",
    "time.now_ns",
    "regex.match",
    "glob.match",
];

/// Compiled patterns (regular expressions and globs) kept beyond this many
/// are dropped, so that inputs cannot grow the cache without bound.
const MAX_PATTERNS: usize = 256;

/// Compiled regular expressions, shared by every call of one module: a
/// policy matches the same few patterns on every request.
#[derive(Default)]
pub struct Patterns {
    compiled: Mutex<HashMap<String, Arc<regex::Regex>>>,
}

impl Patterns {
    fn get(&self, source: &str) -> Result<Arc<regex::Regex>, String> {
        if let Some(regex) = self.lock().get(source) {
            return Ok(regex.clone());
        }
        let regex = Arc::new(regex::Regex::new(source).map_err(|e| e.to_string())?);
        let mut compiled = self.lock();
        if compiled.len() >= MAX_PATTERNS {
            compiled.clear();
        }
        compiled.insert(source.to_owned(), regex.clone());
        Ok(regex)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<regex::Regex>>> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Builtin {
    /// The builtin called `name`, if the host implements it.
    pub fn named(name: &str) -> Option<Builtin> {
        Some(match name {
            "sprintf" => Builtin::Sprintf,
            "trace" => Builtin::Trace,
            "time.now_ns" => Builtin::NowNs,
            "regex.match" => Builtin::RegexMatch,
            "glob.match" => Builtin::GlobMatch,
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Sprintf => "sprintf",
            Builtin::Trace => "trace",
            Builtin::NowNs => "time.now_ns",
            Builtin::RegexMatch => "regex.match",
            Builtin::GlobMatch => "glob.match",
        }
    }

    fn arity(self) -> usize {
        match self {
            Builtin::NowNs => 0,
            Builtin::Trace => 1,
            Builtin::Sprintf | Builtin::RegexMatch => 2,
            Builtin::GlobMatch => 3,
        }
    }

    /// Calls it. `trace` writes its note through `log`. An error makes the
    /// call undefined in the policy, as OPA's builtin errors do.
    ///
    /// # Errors
    ///
    /// Wrong arguments, with what was expected.
    pub fn call(
        self,
        args: &[Value],
        patterns: &Patterns,
        log: &mut dyn FnMut(&str),
    ) -> Result<Value, String> {
        if args.len() != self.arity() {
            return Err(format!(
                "{} takes {} arguments, not {}",
                self.name(),
                self.arity(),
                args.len()
            ));
        }
        let string = |i: usize| {
            args[i]
                .as_str()
                .ok_or_else(|| format!("{}: operand {} must be a string", self.name(), i + 1))
        };
        match self {
            Builtin::Sprintf => match &args[1] {
                Value::Array(values) => Ok(Value::String(sprintf(string(0)?, values))),
                _ => Err("sprintf: operand 2 must be an array".into()),
            },
            Builtin::Trace => {
                log(string(0)?);
                Ok(Value::Bool(true))
            }
            Builtin::NowNs => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|e| e.to_string())?;
                Ok(Value::Number(now.as_nanos().to_string()))
            }
            Builtin::RegexMatch => {
                let regex = patterns.get(string(0)?)?;
                Ok(Value::Bool(regex.is_match(string(1)?)))
            }
            Builtin::GlobMatch => {
                let delimiters: Vec<char> = match &args[1] {
                    Value::Null => Vec::new(),
                    Value::Array(items) if items.is_empty() => vec!['.'],
                    Value::Array(items) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .flat_map(str::chars)
                        .collect(),
                    _ => return Err("glob.match: operand 2 must be null or an array".into()),
                };
                let regex = patterns.get(&glob::to_regex(string(0)?, &delimiters)?)?;
                Ok(Value::Bool(regex.is_match(string(2)?)))
            }
        }
    }
}

/// Go's `fmt.Sprintf` as OPA calls it: strings are passed as Go strings,
/// numbers as numbers, and every other value as OPA prints it (so `%v` of a
/// set is `{"a", "b"}`). Flags, width and precision are honoured for the
/// common verbs; a verb without an argument is `%!v(MISSING)`, as in Go.
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::with_capacity(format.len() + 16 * args.len());
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut left = false;
        let mut zero = false;
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => left = true,
                '0' => zero = true,
                '+' | ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        let width = digits(&mut chars);
        let precision = if chars.peek() == Some(&'.') {
            chars.next();
            Some(digits(&mut chars).unwrap_or(0))
        } else {
            None
        };
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        let text = verb_text(verb, arg, precision);
        pad(&mut out, &text, width.unwrap_or(0), left, zero && !left);
    }
    let extra: Vec<String> = args
        .map(|arg| format!("{}={}", type_name(arg), plain(arg)))
        .collect();
    if !extra.is_empty() {
        let _ = write!(out, "%!(EXTRA {})", extra.join(", "));
    }
    out
}

fn digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut value = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        value = Some(value.unwrap_or(0) * 10 + d as usize);
        chars.next();
    }
    value
}

fn pad(out: &mut String, text: &str, width: usize, left: bool, zero: bool) {
    let fill = width.saturating_sub(text.chars().count());
    if left {
        out.push_str(text);
        out.extend(std::iter::repeat_n(' ', fill));
    } else if zero && text.starts_with('-') {
        out.push('-');
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(&text[1..]);
    } else {
        out.extend(std::iter::repeat_n(if zero { '0' } else { ' ' }, fill));
        out.push_str(text);
    }
}

/// How Go's `%v` prints the argument OPA passes: a string as itself, any
/// other value as OPA prints it.
fn plain(arg: &Value) -> String {
    match arg {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn type_name(arg: &Value) -> &'static str {
    match arg {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.parse::<i64>().is_ok() => "int",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "ast.Array",
        Value::Object(_) => "ast.object",
        Value::Set(_) => "ast.set",
    }
}

fn verb_text(verb: char, arg: &Value, precision: Option<usize>) -> String {
    let number = match arg {
        Value::Number(n) => n.parse::<f64>().ok(),
        _ => None,
    };
    let integer = match arg {
        Value::Number(n) => n.parse::<i128>().ok(),
        _ => None,
    };
    match (verb, arg) {
        ('v' | 's', Value::String(s)) => match precision {
            Some(p) => s.chars().take(p).collect(),
            None => s.clone(),
        },
        ('v' | 's', _) => plain(arg),
        ('q', Value::String(s)) => Value::String(s.clone()).to_string(),
        ('t', Value::Bool(b)) => b.to_string(),
        ('d', _) if integer.is_some() => integer.unwrap_or_default().to_string(),
        ('x' | 'X', _) if integer.is_some() => {
            let text = format!("{:x}", integer.unwrap_or_default());
            if verb == 'X' {
                text.to_uppercase()
            } else {
                text
            }
        }
        ('x' | 'X', Value::String(s)) => {
            let text = hex::encode(s.as_bytes());
            if verb == 'X' {
                text.to_uppercase()
            } else {
                text
            }
        }
        ('f' | 'F', _) if number.is_some() => {
            format!("{:.*}", precision.unwrap_or(6), number.unwrap_or_default())
        }
        ('e', _) if number.is_some() => {
            format!("{:.*e}", precision.unwrap_or(6), number.unwrap_or_default())
        }
        ('g' | 'G', _) if number.is_some() => plain(arg),
        _ => format!("%!{verb}({}={})", type_name(arg), plain(arg)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<Value> {
        match Value::parse(text).unwrap() {
            Value::Array(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }

    #[test]
    fn sprintf_prints_values_as_opa_does() {
        // The messages Gatekeeper's library writes.
        assert_eq!(
            sprintf(
                "Privileged container is not allowed: %v, securityContext: %v",
                &args(r#"["nginx", {"privileged": true, "capabilities": {"add": ["NET_ADMIN"]}}]"#)
            ),
            r#"Privileged container is not allowed: nginx, securityContext: {"capabilities": {"add": ["NET_ADMIN"]}, "privileged": true}"#
        );
        assert_eq!(
            sprintf(
                "container <%v> has a disallowed capability. Allowed capabilities are %v",
                &args(r#"["c", {"NET_BIND_SERVICE", "CHOWN"}]"#)
            ),
            r#"container <c> has a disallowed capability. Allowed capabilities are {"CHOWN", "NET_BIND_SERVICE"}"#
        );
        assert_eq!(
            sprintf("%v %v %v %v", &args(r#"[set(), ["a", 1], null, 2.5]"#)),
            r#"set() ["a", 1] null 2.5"#
        );
    }

    #[test]
    fn sprintf_verbs_flags_and_mistakes() {
        assert_eq!(
            sprintf(
                "%d|%5d|%-4d|%03d|%x|%q|%t|%.2f|%s|%%",
                &args(r#"[42, 7, 7, -5, 255, "q\"t", true, 3.14159, "str"]"#)
            ),
            r#"42|    7|7   |-05|ff|"q\"t"|true|3.14|str|%"#
        );
        assert_eq!(
            sprintf("%v and %v", &args(r#"["one"]"#)),
            "one and %!v(MISSING)"
        );
        assert_eq!(sprintf("%d", &args(r#"["x"]"#)), "%!d(string=x)");
        assert_eq!(sprintf("none", &args(r#"[1]"#)), "none%!(EXTRA int=1)");
    }

    #[test]
    fn regex_and_glob_match_and_errors_are_undefined() {
        let patterns = Patterns::default();
        let call = |builtin: Builtin, text: &str| builtin.call(&args(text), &patterns, &mut |_| {});
        assert_eq!(
            call(Builtin::RegexMatch, r#"["^a+$", "aaa"]"#),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            call(Builtin::RegexMatch, r#"["^a+$", "b"]"#),
            Ok(Value::Bool(false))
        );
        assert!(call(Builtin::RegexMatch, r#"["(", "b"]"#).is_err());
        assert_eq!(
            call(
                Builtin::GlobMatch,
                r#"["*.github.com", [], "api.github.com"]"#
            ),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            call(
                Builtin::GlobMatch,
                r#"["*.github.com", [], "a.cdn.github.com"]"#
            ),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            call(
                Builtin::GlobMatch,
                r#"["*hub.com", null, "a.cdn.github.com"]"#
            ),
            Ok(Value::Bool(true))
        );
        assert!(call(Builtin::GlobMatch, r#"["*", 1, "x"]"#).is_err());
        assert!(call(Builtin::Sprintf, r#"["%v"]"#).is_err(), "arity");
        let mut notes = Vec::new();
        let traced = Builtin::Trace.call(&args(r#"["note"]"#), &patterns, &mut |n| {
            notes.push(n.to_owned())
        });
        assert_eq!(
            (traced, notes),
            (Ok(Value::Bool(true)), vec!["note".to_owned()])
        );
        match call(Builtin::NowNs, "[]") {
            Ok(Value::Number(ns)) => {
                assert!(ns.parse::<u128>().unwrap() > 1_700_000_000_000_000_000)
            }
            other => panic!("{other:?}"),
        }
    }
}
