//! `opa build -t wasm` bundles: a gzipped tar holding `/policy.wasm`, the
//! bundle's data (`data.json` files, each at the path of its folder) and a
//! `.manifest`.

use std::io::Read;

use serde_json::Value as Json;

/// Bundles larger than this, unpacked, are refused (a gzip bomb otherwise
/// costs the server its memory).
const MAX_UNPACKED: u64 = 256 << 20;

/// What a bundle holds that the host uses.
#[derive(Debug)]
pub struct Bundle {
    /// The policy module.
    pub wasm: Vec<u8>,
    /// The bundle's data, if it has any.
    pub data: Option<Json>,
}

/// Whether `bytes` are gzip (a bundle) rather than a Wasm module.
pub fn is_bundle(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Reads a bundle.
///
/// # Errors
///
/// Not a gzipped tar, no Wasm module or several, data that is not JSON, or
/// too large unpacked.
pub fn read(bytes: &[u8]) -> Result<Bundle, String> {
    let unpacked = flate2::read::GzDecoder::new(bytes).take(MAX_UNPACKED + 1);
    let mut archive = tar::Archive::new(unpacked);
    let mut wasm: Vec<(String, Vec<u8>)> = Vec::new();
    let mut data: Option<Json> = None;
    let mut total = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| format!("not an OPA bundle (a gzipped tar): {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("bundle: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("bundle: {e}"))?
            .to_string_lossy()
            .trim_start_matches('/')
            .to_owned();
        total += entry.size();
        if total > MAX_UNPACKED {
            return Err(format!(
                "bundle: more than {} MiB unpacked",
                MAX_UNPACKED >> 20
            ));
        }
        let mut contents = Vec::new();
        entry
            .read_to_end(&mut contents)
            .map_err(|e| format!("bundle: {path}: {e}"))?;
        if path.ends_with(".wasm") {
            wasm.push((path, contents));
        } else if path == "data.json" || path.ends_with("/data.json") {
            let value: Json = serde_json::from_slice(&contents)
                .map_err(|e| format!("bundle: {path}: not JSON: {e}"))?;
            let folders: Vec<&str> = path
                .trim_end_matches("data.json")
                .split('/')
                .filter(|s| !s.is_empty())
                .collect();
            let mut at = data.get_or_insert_with(|| Json::Object(Default::default()));
            for folder in folders {
                at = at
                    .as_object_mut()
                    .ok_or_else(|| {
                        format!("bundle: {path}: data conflicts with another data.json")
                    })?
                    .entry(folder)
                    .or_insert_with(|| Json::Object(Default::default()));
            }
            merge_into(at, value);
        }
    }
    match wasm.len() {
        1 => Ok(Bundle {
            wasm: wasm.remove(0).1,
            data,
        }),
        0 => Err("bundle: it holds no Wasm module (build it with `opa build -t wasm`)".into()),
        _ => Err(format!(
            "bundle: it holds several Wasm modules ({}); build one per policy",
            wasm.iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn merge_into(at: &mut Json, value: Json) {
    match (at, value) {
        (Json::Object(base), Json::Object(more)) => base.extend(more),
        (at, value) => *at = value,
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A gzipped tar of `files`, as `opa build` writes bundles.
    pub fn bundle(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, contents) in files {
            // Go's tar (which `opa build` uses) writes names with a leading
            // '/', which the tar crate's path setters refuse: set it raw.
            let mut header = tar::Header::new_old();
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, *contents).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_bundle_gives_its_module_and_data_at_their_paths() {
        let bytes = bundle(&[
            ("/.manifest", br#"{"revision":"1"}"#),
            ("/policy.wasm", b"\0asm"),
            ("/data.json", br#"{"top":1}"#),
            ("/teams/ml/data.json", br#"{"gpus":8}"#),
        ]);
        assert!(is_bundle(&bytes));
        let read = read(&bytes).unwrap();
        assert_eq!(read.wasm, b"\0asm");
        assert_eq!(
            read.data,
            Some(serde_json::json!({"top": 1, "teams": {"ml": {"gpus": 8}}}))
        );
    }

    #[test]
    fn bad_bundles_say_why() {
        assert!(
            read(&bundle(&[("/data.json", b"{}")]))
                .unwrap_err()
                .contains("no Wasm module")
        );
        assert!(
            read(&bundle(&[("/a.wasm", b"x"), ("/b.wasm", b"y")]))
                .unwrap_err()
                .contains("several Wasm modules (a.wasm, b.wasm)")
        );
        assert!(
            read(&bundle(&[("/policy.wasm", b"x"), ("/data.json", b"{")]))
                .unwrap_err()
                .contains("data.json: not JSON")
        );
        assert!(read(&[0x1f, 0x8b, 0, 0]).is_err());
    }
}
