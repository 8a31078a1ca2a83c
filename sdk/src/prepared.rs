//! Settings read ahead of a call. The host calls a component's `prepare`
//! export on each fresh instance, off the request path, with the settings
//! its one call will get; the settings read there wait here for that call.
//! A call whose settings text differs (or that finds none read) reads its
//! own, so what a call sees never depends on `prepare` having run.

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

use crate::{Error, Policy, Result, parse_settings};

/// The settings text last prepared, and what it was read into.
struct Prepared {
    text: String,
    settings: Rc<dyn Any>,
}

thread_local! {
    // One per instance: a component runs on one thread.
    static PREPARED: RefCell<Option<Prepared>> = const { RefCell::new(None) };
}

/// Reads `text` into `P`'s settings and keeps them for the next calls.
///
/// # Errors
///
/// The settings do not parse.
pub fn prepare<P: Policy>(text: &str) -> Result<(), String> {
    let settings: P::Settings = parse_settings(text)?;
    PREPARED.with(|prepared| {
        *prepared.borrow_mut() = Some(Prepared {
            text: text.to_owned(),
            settings: Rc::new(settings),
        });
    });
    Ok(())
}

/// Runs `f` on `P`'s settings of `text`: those prepared, when they were
/// prepared from the same text, else read now.
///
/// # Errors
///
/// The settings do not parse, or `f`'s error.
pub fn with_settings<P: Policy, R>(
    text: &str,
    f: impl FnOnce(&P::Settings) -> Result<R>,
) -> Result<R> {
    let prepared = PREPARED.with(|prepared| {
        prepared
            .borrow()
            .as_ref()
            .filter(|p| same(&p.text, text))
            .map(|p| p.settings.clone())
    });
    match prepared.and_then(|settings| settings.downcast::<P::Settings>().ok()) {
        Some(settings) => f(&settings),
        None => f(&parse_settings(text).map_err(Error)?),
    }
}

/// Whether two texts are equal, compared eight bytes at a time: on Wasm the
/// standard comparison is a loop over single bytes, and settings can run to
/// tens of kilobytes, compared on every call.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (words_a, words_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails = (words_a.remainder(), words_b.remainder());
    tails.0 == tails.1
        && words_a.zip(words_b).all(|(x, y)| {
            u64::from_ne_bytes(x.try_into().expect("eight bytes"))
                == u64::from_ne_bytes(y.try_into().expect("eight bytes"))
        })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use serde::Deserialize;

    use super::*;
    use crate::{Request, Verdict};

    thread_local! {
        static READS: Cell<u32> = const { Cell::new(0) };
    }

    /// Settings that count how often they are read.
    struct Counted(String);

    impl<'de> Deserialize<'de> for Counted {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            #[derive(Deserialize)]
            struct Raw {
                name: String,
            }
            READS.with(|reads| reads.set(reads.get() + 1));
            Raw::deserialize(d).map(|raw| Counted(raw.name))
        }
    }

    struct Named;

    impl Policy for Named {
        type Settings = Counted;
        fn evaluate(_: &Request<'_>, settings: &Counted) -> Result<Verdict> {
            Ok(Verdict::deny(settings.0.clone()))
        }
    }

    fn name(text: &str) -> String {
        with_settings::<Named, _>(text, |s| Ok(s.0.clone())).unwrap()
    }

    #[test]
    fn texts_are_the_same_only_when_every_byte_is() {
        let text = "x".repeat(37);
        assert!(same(&text, &text.clone()));
        for at in [0, 8, 35, 36] {
            let mut other = text.clone().into_bytes();
            other[at] = b'y';
            assert!(!same(&text, std::str::from_utf8(&other).unwrap()));
        }
        assert!(!same(&text, &text[1..]));
        assert!(same("", ""));
    }

    #[test]
    fn a_call_with_the_prepared_text_reads_nothing_and_any_other_reads_its_own() {
        prepare::<Named>(r#"{"name":"a"}"#).unwrap();
        let reads = || READS.with(Cell::get);
        assert_eq!(reads(), 1);
        assert_eq!(name(r#"{"name":"a"}"#), "a");
        assert_eq!(reads(), 1);
        assert_eq!(name(r#"{"name":"b"}"#), "b");
        assert_eq!(reads(), 2);
        assert!(
            prepare::<Named>(r#"{"name":1}"#)
                .unwrap_err()
                .starts_with("invalid settings")
        );
        // A failed prepare leaves what was prepared before.
        assert_eq!(name(r#"{"name":"a"}"#), "a");
        assert_eq!(reads(), 3);
    }
}
