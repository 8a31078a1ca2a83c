//! How PSA words a violation's detail, reproduced so that users and tools
//! recognise the messages.

/// `singular` for one item, else `plural`.
pub fn pluralize<'s>(singular: &'s str, plural: &'s str, count: usize) -> &'s str {
    if count == 1 { singular } else { plural }
}

/// `"a", "b"`: each item in double quotes, joined by commas, without
/// escaping (as PSA's `joinQuote`).
pub fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::new();
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        out.push('"');
        out.push_str(item.as_ref());
        out.push('"');
    }
    out
}

/// `container "a"` or `containers "a", "b"`.
pub fn containers(names: &[&str]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// Who set a forbidden value: `pod`, `containers "a", "b"`, or both joined
/// by ` and `; `None` when nobody did.
pub fn setters(pod: bool, names: &[&str]) -> Option<String> {
    match (pod, names.is_empty()) {
        (false, true) => None,
        (true, true) => Some("pod".to_owned()),
        (false, false) => Some(containers(names)),
        (true, false) => Some(format!("pod and {}", containers(names))),
    }
}

/// Sorts and deduplicates, as PSA's string sets list their members.
pub fn sorted_set<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items.dedup();
    items
}

/// `key="value"`, the value quoted as Go's `%q` quotes it.
pub fn key_value(key: &str, value: &str) -> String {
    format!("{key}={value:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_setters_like_psa() {
        assert_eq!(setters(false, &[]), None);
        assert_eq!(setters(true, &[]).unwrap(), "pod");
        assert_eq!(setters(false, &["a"]).unwrap(), r#"container "a""#);
        assert_eq!(
            setters(true, &["a", "b"]).unwrap(),
            r#"pod and containers "a", "b""#
        );
    }
}
