//! The decision-log readers: any file gives a verdict on its chain or an
//! error naming a line, never a panic; the tail reader finds the same last
//! line as reading the whole file does.

#![no_main]

use std::io::Cursor;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tollgate::audit::log::last_line_of;
use tollgate::audit::verify::verify_reader;

fuzz_target!(|data: &[u8]| {
    let _ = verify_reader(Path::new("fuzz.log"), Cursor::new(data), &[]);
    let expected = data
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .next_back()
        .map(<[u8]>::to_vec);
    let found = last_line_of(Cursor::new(data)).expect("reading memory");
    assert_eq!(found, expected);
});
