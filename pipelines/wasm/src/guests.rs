//! Guests written in WebAssembly text against wit/pipeline.wit and built into components here
//! (wit-component): what the tests and the benchmark run where no guest toolchain exists
//! (no `wasm32` Rust target on the build machines), and how a test builds a guest that
//! misbehaves on purpose. Behind the `guests` feature; the server never calls it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

const GUEST: &str = "sluice:pipeline/guest@0.1.0";

/// A core module speaking the canonical ABI of the `pipeline` world: `describe` says
/// `describe`, `inlet` runs the code given, `outlet` answers the body it got, `pipe` streams
/// `ticks` events of text `tick`; `extra` goes first (imports).
pub fn core(describe: &str, inlet: &str, extra: &str) -> String {
    core_with(describe, inlet, extra, 3)
}

pub fn core_with(describe: &str, inlet: &str, extra: &str, ticks: u32) -> String {
    format!(
        r#"(module
  {extra}
  (import "[export]{GUEST}" "[resource-new]answer" (func $new_answer (param i32) (result i32)))
  (global $left (mut i32) (i32.const 0))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                             (i32.xor (i32.sub (local.get 2) (i32.const 1)) (i32.const -1))))
    (global.set $heap (i32.add (local.get $ptr) (local.get 3)))
    (block $ok
      (loop $grow
        (br_if $ok (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (local.get $ptr))
  (data (i32.const 16) "{describe}")
  (data (i32.const 512) "not json")
  (func (export "{GUEST}#describe") (result i32)
    (i32.store (i32.const 1024) (i32.const 16))
    (i32.store (i32.const 1028) (i32.const {len}))
    (i32.const 1024))
  (func (export "{GUEST}#inlet") (param i32 i32 i32 i32 i32 i32 i32) (result i32)
    {inlet})
  (func (export "{GUEST}#outlet") (param i32 i32 i32 i32 i32 i32 i32) (result i32)
    (i32.store8 (i32.const 1024) (i32.const 0))
    (i32.store (i32.const 1028) (local.get 0))
    (i32.store (i32.const 1032) (local.get 1))
    (i32.const 1024))
  (data (i32.const 600) "tick")
  (func (export "{GUEST}#pipe") (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (global.set $left (i32.const {ticks}))
    (i32.store8 (i32.const 1024) (i32.const 0))
    (i32.store (i32.const 1028) (call $new_answer (i32.const 1)))
    (i32.const 1024))
  (func (export "{GUEST}#[method]answer.next") (param i32) (result i32)
    (if (i32.eqz (global.get $left))
      (then (i32.store8 (i32.const 1024) (i32.const 0)) (return (i32.const 1024))))
    (global.set $left (i32.sub (global.get $left) (i32.const 1)))
    (i32.store8 (i32.const 1024) (i32.const 1))
    (i32.store8 (i32.const 1028) (i32.const 0))
    (i32.store (i32.const 1032) (i32.const 600))
    (i32.store (i32.const 1036) (i32.const 4))
    (i32.const 1024))
)"#,
        describe = describe.replace('"', "\\\""),
        len = describe.len(),
    )
}

/// `ok(body)`: the body it was given.
pub const ECHO: &str = "(i32.store8 (i32.const 1024) (i32.const 0))
    (i32.store (i32.const 1028) (local.get 0))
    (i32.store (i32.const 1032) (local.get 1))
    (i32.const 1024)";

pub fn component(core_wat: &str, extra_wit: Option<&str>) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let (pipeline, _) = resolve.push_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit")).unwrap();
    let world = match extra_wit {
        Some(text) => {
            let package = resolve.push_str("extra.wit", text).unwrap();
            resolve.select_world(&[package], None).unwrap()
        }
        None => resolve.select_world(&[pipeline], Some("pipeline")).unwrap(),
    };
    let mut module = wat::parse_str(core_wat).unwrap();
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8).unwrap();
    wit_component::ComponentEncoder::default().module(&module).unwrap().validate(true).encode().unwrap()
}

pub fn filter(id: &str, inlet: &str) -> Vec<u8> {
    component(&core(&format!(r#"{{"id":"{id}","kind":"filter"}}"#), inlet, ""), None)
}

/// A pipe whose answers are `ticks` text events.
pub fn pipe(id: &str, ticks: u32) -> Vec<u8> {
    component(&core_with(&format!(r#"{{"id":"{id}","name":"Ticker","kind":"pipe"}}"#), ECHO, "", ticks), None)
}
