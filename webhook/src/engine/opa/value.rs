//! Rego values as OPA's `opa_value_dump` writes them (JSON, plus sets as
//! `{a,b}` and `set()`, and objects whose keys need not be strings), and as
//! OPA prints them in messages (`sprintf`'s `%v`): sorted, with `", "` and
//! `": "` between members.

use std::cmp::Ordering;
use std::fmt;

/// A Rego value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written (Rego numbers are arbitrary precision).
    Number(String),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object, in the module's order.
    Object(Vec<(Value, Value)>),
    /// A set.
    Set(Vec<Value>),
}

/// Nesting deeper than this is refused rather than parsed on the host's stack.
const MAX_DEPTH: usize = 256;

impl Value {
    /// Parses `opa_value_dump` text.
    ///
    /// # Errors
    ///
    /// Text that is not a Rego value, with where it went wrong.
    pub fn parse(text: &str) -> Result<Value, String> {
        let mut parser = Parser { text, at: 0 };
        let value = parser.value(0)?;
        parser.skip_space();
        if parser.at != text.len() {
            return Err(parser.error("trailing characters"));
        }
        Ok(value)
    }

    /// The value as JSON (sets as arrays, non-string keys written as their
    /// JSON text), for results built on the host.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::from_str(n).unwrap_or(serde_json::Value::Null),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(items) | Value::Set(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
            Value::Object(members) => serde_json::Value::Object(
                members
                    .iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Value::String(s) => s.clone(),
                            other => other.to_json().to_string(),
                        };
                        (key, v.to_json())
                    })
                    .collect(),
            ),
        }
    }

    /// The string inside, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Rego's order of types: null, booleans, numbers, strings, arrays,
    /// objects, sets.
    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
            Value::Set(_) => 6,
        }
    }

    /// Rego's total order on values, which sets and objects print in.
    pub fn compare(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Number(a), Value::Number(b)) => {
                let (x, y) = (a.parse::<f64>(), b.parse::<f64>());
                match (x, y) {
                    (Ok(x), Ok(y)) => x.total_cmp(&y),
                    _ => a.cmp(b),
                }
            }
            (Value::String(a), Value::String(b)) => a.cmp(b),
            (Value::Array(a), Value::Array(b)) | (Value::Set(a), Value::Set(b)) => {
                compare_all(&sorted_if(self, a), &sorted_if(other, b))
            }
            (Value::Object(a), Value::Object(b)) => {
                let (a, b) = (sorted_members(a), sorted_members(b));
                for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
                    let order = ka.compare(kb).then_with(|| va.compare(vb));
                    if order != Ordering::Equal {
                        return order;
                    }
                }
                a.len().cmp(&b.len())
            }
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

fn sorted_if<'v>(value: &Value, items: &'v [Value]) -> Vec<&'v Value> {
    let mut items: Vec<&Value> = items.iter().collect();
    if matches!(value, Value::Set(_)) {
        items.sort_by(|a, b| a.compare(b));
    }
    items
}

fn sorted_members(members: &[(Value, Value)]) -> Vec<&(Value, Value)> {
    let mut members: Vec<&(Value, Value)> = members.iter().collect();
    members.sort_by(|a, b| a.0.compare(&b.0));
    members
}

fn compare_all(a: &[&Value], b: &[&Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = x.compare(y);
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// As OPA prints a value inside a message: `["a", 1]`, `{"k": "v"}` with
/// keys sorted, `{"a", "b"}` sorted and `set()` for sets.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, items: &[&Value]| {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{item}")?;
            }
            Ok(())
        };
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => f.write_str(n),
            Value::String(s) => write!(f, "{}", serde_json::Value::String(s.clone())),
            Value::Array(items) => {
                f.write_str("[")?;
                list(f, &items.iter().collect::<Vec<_>>())?;
                f.write_str("]")
            }
            Value::Set(items) if items.is_empty() => f.write_str("set()"),
            Value::Set(items) => {
                f.write_str("{")?;
                list(f, &sorted_if(self, items))?;
                f.write_str("}")
            }
            Value::Object(members) => {
                f.write_str("{")?;
                for (i, (key, value)) in sorted_members(members).into_iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{key}: {value}")?;
                }
                f.write_str("}")
            }
        }
    }
}

struct Parser<'t> {
    text: &'t str,
    at: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("not a Rego value: {what} at byte {}", self.at)
    }

    fn skip_space(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.text[self.at..].starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.skip_space();
        let rest = &self.text[self.at..];
        let next = rest
            .bytes()
            .next()
            .ok_or_else(|| self.error("end of text"))?;
        for (word, value) in [
            ("null", Value::Null),
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("set()", Value::Set(Vec::new())),
        ] {
            if rest.starts_with(word) {
                self.at += word.len();
                return Ok(value);
            }
        }
        match next {
            b'"' => self.string().map(Value::String),
            b'[' => {
                self.at += 1;
                self.items("]", depth).map(Value::Array)
            }
            b'{' => self.braces(depth),
            b'-' | b'0'..=b'9' => Ok(self.number()),
            _ => Err(self.error("unexpected character")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let rest = &self.text[self.at..];
        let mut escaped = false;
        for (i, c) in rest.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    let token = &rest[..=i];
                    self.at += i + 1;
                    return serde_json::from_str(token).map_err(|e| self.error(&e.to_string()));
                }
                _ => {}
            }
        }
        Err(self.error("unterminated string"))
    }

    fn number(&mut self) -> Value {
        let rest = &self.text[self.at..];
        let len = rest
            .find(|c: char| !matches!(c, '0'..='9' | '-' | '+' | '.' | 'e' | 'E'))
            .unwrap_or(rest.len());
        self.at += len;
        Value::Number(rest[..len].to_owned())
    }

    /// Members up to `close`, the opening bracket already read.
    fn items(&mut self, close: &str, depth: usize) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(self.value(depth + 1)?);
            if self.eat(",") {
                continue;
            }
            if self.eat(close) {
                return Ok(items);
            }
            return Err(self.error("expected ',' or a closing bracket"));
        }
    }

    /// An object or a non-empty set: which one shows after the first member.
    fn braces(&mut self, depth: usize) -> Result<Value, String> {
        self.at += 1;
        if self.eat("}") {
            return Ok(Value::Object(Vec::new()));
        }
        let first = self.value(depth + 1)?;
        if !self.eat(":") {
            let mut items = vec![first];
            if self.eat(",") {
                items.extend(self.items("}", depth)?);
            } else if !self.eat("}") {
                return Err(self.error("expected ',' or '}' in a set"));
            }
            return Ok(Value::Set(items));
        }
        let mut members = vec![(first, self.value(depth + 1)?)];
        loop {
            if self.eat("}") {
                return Ok(Value::Object(members));
            }
            if !self.eat(",") {
                return Err(self.error("expected ',' or '}' in an object"));
            }
            let key = self.value(depth + 1)?;
            if !self.eat(":") {
                return Err(self.error("expected ':' in an object"));
            }
            members.push((key, self.value(depth + 1)?));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_objects_and_json_parse_and_print_as_opa_does() {
        let value =
            Value::parse(r#"[{"b","a"},set(),{"k":[true,null],"a":1.5},{1:"x"},"s\"q"]"#).unwrap();
        assert_eq!(
            value.to_string(),
            r#"[{"a", "b"}, set(), {"a": 1.5, "k": [true, null]}, {1: "x"}, "s\"q"]"#
        );
        assert_eq!(
            value.to_json(),
            serde_json::json!([["b", "a"], [], {"k": [true, null], "a": 1.5}, {"1": "x"}, "s\"q"])
        );
        assert_eq!(Value::parse("{}").unwrap(), Value::Object(Vec::new()));
        assert_eq!(Value::parse(" -12e3 ").unwrap().to_string(), "-12e3");
    }

    #[test]
    fn sets_sort_in_regos_order_of_types() {
        let value = Value::parse(r#"{"b",[1],2,null,{"k":1},true,"a"}"#).unwrap();
        assert_eq!(
            value.to_string(),
            r#"{null, true, 2, "a", "b", [1], {"k": 1}}"#
        );
    }

    #[test]
    fn bad_text_is_refused_with_where() {
        for (text, what) in [
            ("[1,", "end of text"),
            ("{1:2,3}", "expected ':'"),
            ("\"open", "unterminated string"),
            ("[1] x", "trailing characters"),
            ("@", "unexpected character"),
        ] {
            let error = Value::parse(text).unwrap_err();
            assert!(error.contains(what), "{text}: {error}");
        }
        let deep = "[".repeat(10_000);
        assert!(
            Value::parse(&deep)
                .unwrap_err()
                .contains("nested too deeply")
        );
    }
}
