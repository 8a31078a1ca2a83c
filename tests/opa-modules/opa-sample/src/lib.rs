//! A core module that speaks OPA's Wasm ABI 1.3 as `opa build -t wasm` output
//! does: it imports `env.memory`, `opa_abort`, `opa_println` and
//! `opa_builtin0..3`, and exports `opa_eval` (the one-call fast path),
//! `opa_malloc`, `opa_json_parse`, `opa_json_dump`, `opa_value_dump`,
//! `opa_heap_ptr_get/set`, `builtins` and `entrypoints`. No `opa` binary can
//! be had where Tollgate is built, so this module stands in for one to test
//! the host's side of the ABI; its entrypoints are written as the Rego they
//! name would evaluate, and call the host's builtins the way compiled Rego
//! does.
//!
//! Values live on the module's heap (a bump allocator that also serves Rust's
//! own allocations, as OPA's runtime has one heap), so `opa_heap_ptr_set`
//! frees everything above the pointer, as the ABI says.

#![cfg(target_arch = "wasm32")]
#![allow(
    unsafe_code,
    reason = "an ABI of raw addresses into linear memory, exported and imported by symbol"
)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value as Json, json};

unsafe extern "C" {
    static __heap_base: u8;
    fn opa_abort(message: *const u8);
    fn opa_println(message: *const u8);
    fn opa_builtin0(id: i32, ctx: i32) -> i32;
    fn opa_builtin1(id: i32, ctx: i32, a: i32) -> i32;
    fn opa_builtin2(id: i32, ctx: i32, a: i32, b: i32) -> i32;
    fn opa_builtin3(id: i32, ctx: i32, a: i32, b: i32, c: i32) -> i32;
}

/// The builtins this module calls, by the ids its `builtins()` gives them.
const SPRINTF: i32 = 0;
const TRACE: i32 = 1;
const NOW_NS: i32 = 2;
const REGEX_MATCH: i32 = 3;
const GLOB_MATCH: i32 = 4;

const ENTRYPOINTS: &[&str] = &[
    "k8sprivileged/violation",
    "admission/deny",
    "tollgate/format",
    "tollgate/loop",
    "tollgate/grow",
    "tollgate/abort",
    "tollgate/println",
    "tollgate/data",
    "tollgate/now",
    "tollgate/boolean",
];

/// The next free heap address; 0 until first use (then `__heap_base`).
static HEAP: AtomicUsize = AtomicUsize::new(0);

fn heap_ptr() -> usize {
    match HEAP.load(Ordering::Relaxed) {
        0 => &raw const __heap_base as usize,
        ptr => ptr,
    }
}

fn bump(size: usize, align: usize) -> *mut u8 {
    let start = heap_ptr().next_multiple_of(align);
    let end = start + size;
    let have = core::arch::wasm32::memory_size(0) * 65536;
    if end > have {
        let pages = (end - have).div_ceil(65536);
        if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
            return core::ptr::null_mut();
        }
    }
    HEAP.store(end, Ordering::Relaxed);
    start as *mut u8
}

struct Heap;

unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump(layout.size(), layout.align())
    }

    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

#[global_allocator]
static ALLOCATOR: Heap = Heap;

/// A Rego value: JSON plus sets.
#[derive(Clone)]
enum Value {
    Json(Json),
    Array(Vec<Value>),
    Set(Vec<Value>),
}

impl Value {
    /// JSON, sets as arrays (`opa_json_dump`).
    fn to_json(&self) -> Json {
        match self {
            Value::Json(json) => json.clone(),
            Value::Array(items) | Value::Set(items) => {
                Json::Array(items.iter().map(Value::to_json).collect())
            }
        }
    }

    /// Rego's value text, sets as `{…}` and `set()` (`opa_value_dump`).
    fn to_text(&self) -> String {
        match self {
            Value::Json(json) => json.to_string(),
            Value::Array(items) => format!("[{}]", join(items)),
            Value::Set(items) if items.is_empty() => "set()".into(),
            Value::Set(items) => format!("{{{}}}", join(items)),
        }
    }
}

fn join(items: &[Value]) -> String {
    items
        .iter()
        .map(Value::to_text)
        .collect::<Vec<_>>()
        .join(",")
}

fn boxed(value: Value) -> i32 {
    Box::into_raw(Box::new(value)) as i32
}

fn value_at(addr: i32) -> Option<Value> {
    (addr != 0).then(|| unsafe { (*(addr as *const Value)).clone() })
}

fn c_string(text: String) -> i32 {
    let mut bytes = text.into_bytes();
    bytes.push(0);
    bytes.leak().as_ptr() as i32
}

#[unsafe(no_mangle)]
extern "C" fn opa_malloc(size: i32) -> i32 {
    bump(size as usize, 8) as i32
}

#[unsafe(no_mangle)]
extern "C" fn opa_free(_: i32) {}

#[unsafe(no_mangle)]
extern "C" fn opa_heap_ptr_get() -> i32 {
    heap_ptr() as i32
}

#[unsafe(no_mangle)]
extern "C" fn opa_heap_ptr_set(ptr: i32) {
    HEAP.store(ptr as usize, Ordering::Relaxed);
}

#[unsafe(no_mangle)]
extern "C" fn opa_json_parse(addr: i32, len: i32) -> i32 {
    let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) };
    match serde_json::from_slice(bytes) {
        Ok(json) => boxed(Value::Json(json)),
        Err(_) => 0,
    }
}

#[unsafe(no_mangle)]
extern "C" fn opa_json_dump(addr: i32) -> i32 {
    c_string(
        value_at(addr)
            .map_or(Json::Null, |v| v.to_json())
            .to_string(),
    )
}

#[unsafe(no_mangle)]
extern "C" fn opa_value_dump(addr: i32) -> i32 {
    c_string(value_at(addr).map_or("null".into(), |v| v.to_text()))
}

#[unsafe(no_mangle)]
extern "C" fn builtins() -> i32 {
    boxed(Value::Json(json!({
        "sprintf": SPRINTF, "trace": TRACE, "time.now_ns": NOW_NS,
        "regex.match": REGEX_MATCH, "glob.match": GLOB_MATCH,
    })))
}

#[unsafe(no_mangle)]
extern "C" fn entrypoints() -> i32 {
    let map: serde_json::Map<String, Json> = ENTRYPOINTS
        .iter()
        .enumerate()
        .map(|(id, name)| ((*name).to_owned(), json!(id)))
        .collect();
    boxed(Value::Json(Json::Object(map)))
}

/// The fast path: data is a value already on the heap, input is JSON text at
/// `input`, and the heap restarts at `heap`.
#[unsafe(no_mangle)]
extern "C" fn opa_eval(
    reserved: i32,
    entrypoint: i32,
    data: i32,
    input: i32,
    input_len: i32,
    heap: i32,
    _format: i32,
) -> i32 {
    if reserved != 0 {
        abort("invalid reserved argument");
    }
    opa_heap_ptr_set(heap);
    let input: Json = {
        let bytes = unsafe { core::slice::from_raw_parts(input as *const u8, input_len as usize) };
        serde_json::from_slice(bytes).unwrap_or_else(|_| abort("input is not JSON"))
    };
    let data = value_at(data).map_or(Json::Null, |v| v.to_json());
    let results = match evaluate(entrypoint, &data, &input) {
        Some(value) => json!([{"result": value.to_json()}]),
        None => json!([]),
    };
    c_string(results.to_string())
}

fn abort(message: &str) -> ! {
    let text = c_string(message.to_owned());
    unsafe { opa_abort(text as *const u8) };
    unreachable!("opa_abort returned")
}

fn string(text: &str) -> Value {
    Value::Json(Json::String(text.to_owned()))
}

fn call(id: i32, args: &[Value]) -> Option<Value> {
    let args: Vec<i32> = args.iter().cloned().map(boxed).collect();
    let result = unsafe {
        match args[..] {
            [] => opa_builtin0(id, 0),
            [a] => opa_builtin1(id, 0, a),
            [a, b] => opa_builtin2(id, 0, a, b),
            [a, b, c] => opa_builtin3(id, 0, a, b, c),
            _ => unreachable!("no builtin here takes more than 3 arguments"),
        }
    };
    value_at(result)
}

fn sprintf(format: &str, args: Vec<Value>) -> String {
    match call(SPRINTF, &[string(format), Value::Array(args)]) {
        Some(Value::Json(Json::String(text))) => text,
        _ => abort("sprintf gave no string"),
    }
}

fn truthy(id: i32, args: &[Value]) -> bool {
    matches!(call(id, args), Some(Value::Json(Json::Bool(true))))
}

fn containers(spec: &Json) -> impl Iterator<Item = &Json> {
    ["containers", "initContainers", "ephemeralContainers"]
        .into_iter()
        .filter_map(|field| spec[field].as_array())
        .flatten()
}

fn evaluate(entrypoint: i32, data: &Json, input: &Json) -> Option<Value> {
    match ENTRYPOINTS.get(entrypoint as usize).copied() {
        // violation[{"msg": msg, "details": {}}] { c := input_containers[_];
        //   c.securityContext.privileged; msg := sprintf(…) }
        Some("k8sprivileged/violation") => {
            let spec = &input["review"]["object"]["spec"];
            let violations = containers(spec)
                .filter(|c| c["securityContext"]["privileged"] == json!(true))
                .map(|c| {
                    let msg = sprintf(
                        "Privileged container is not allowed: %v, securityContext: %v",
                        vec![
                            Value::Json(c["name"].clone()),
                            Value::Json(c["securityContext"].clone()),
                        ],
                    );
                    Value::Json(json!({"msg": msg, "details": {}}))
                })
                .collect();
            Some(Value::Set(violations))
        }
        // deny[msg] { c := input.request.object.spec.containers[_];
        //   not glob.match("registry.example.com/**", ["/"], c.image); … }
        Some("admission/deny") => {
            let spec = &input["request"]["object"]["spec"];
            let mut messages = Vec::new();
            let mut checked = 0;
            for c in containers(spec) {
                checked += 1;
                let (name, image) = (c["name"].clone(), c["image"].clone());
                let delimiters = Value::Array(vec![string("/")]);
                let pattern = string("registry.example.com/**");
                if !truthy(
                    GLOB_MATCH,
                    &[pattern, delimiters, Value::Json(image.clone())],
                ) {
                    messages.push(string(&sprintf(
                        "container %v uses image %v from outside registry.example.com",
                        vec![Value::Json(name.clone()), Value::Json(image)],
                    )));
                }
                let label = string("^[a-z]([-a-z0-9]*[a-z0-9])?$");
                if !truthy(REGEX_MATCH, &[label, Value::Json(name.clone())]) {
                    messages.push(string(&sprintf(
                        "container name %q is not a DNS label",
                        vec![Value::Json(name)],
                    )));
                }
            }
            let note = sprintf("checked %d containers", vec![Value::Json(json!(checked))]);
            call(TRACE, &[string(&note)]);
            Some(Value::Set(messages))
        }
        Some("tollgate/format") => {
            let set = Value::Set(vec![string("a"), Value::Json(json!(1))]);
            let nested = Value::Array(vec![set.clone(), Value::Json(json!({"k": [true, null]}))]);
            let text = sprintf(
                "%v|%v|%v|%v|%s|%d|%q|%%|%v",
                vec![
                    set,
                    Value::Set(Vec::new()),
                    nested,
                    Value::Json(json!({"b": 2, "a": "x"})),
                    string("plain"),
                    Value::Json(json!(42)),
                    string("quoted"),
                    Value::Json(json!(1.5)),
                ],
            );
            Some(Value::Set(vec![string(&text)]))
        }
        Some("tollgate/loop") => {
            let mut n = 0u64;
            loop {
                n = core::hint::black_box(n.wrapping_add(1));
            }
        }
        Some("tollgate/grow") => {
            let mut kept = Vec::new();
            loop {
                kept.push(core::hint::black_box(vec![1u8; 1 << 20]));
            }
        }
        Some("tollgate/abort") => abort("deliberate abort"),
        Some("tollgate/println") => {
            let line = c_string("hello from the opa sample".into());
            unsafe { opa_println(line as *const u8) };
            Some(Value::Set(Vec::new()))
        }
        Some("tollgate/data") => data.get("deny").map(|deny| Value::Json(deny.clone())),
        Some("tollgate/now") => match call(NOW_NS, &[]) {
            Some(Value::Json(now)) if now.as_u64().is_some_and(|ns| ns > 0) => {
                Some(Value::Set(Vec::new()))
            }
            _ => Some(Value::Set(vec![string("time.now_ns gave no time")])),
        },
        Some("tollgate/boolean") => Some(Value::Json(json!(true))),
        _ => abort(&format!("no entrypoint {entrypoint}")),
    }
}
