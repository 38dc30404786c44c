//! What a component may import: the WASI interfaces sluice gives every guest (with nothing
//! behind the file system, the environment or the sockets) and sluice's own `host`. Anything
//! else is refused when the component is added, by name, before it runs.

/// Interface prefixes a guest may import. `wasi:sockets` is linked because language runtimes
/// import it (componentize-py's Python does), but the store refuses every socket, address
/// and name lookup: a guest reaches the network only through `wasi:http`, behind the
/// allow-list.
const ALLOWED: &[&str] = &[
    "wasi:sockets/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:http/types@",
    "wasi:http/outgoing-handler@",
    "sluice:pipeline/host@0.1.",
    "sluice:pipeline/types@0.1.",
];

/// The export every pipeline has.
pub const GUEST_EXPORT: &str = "sluice:pipeline/guest@0.1.";

pub fn import_allowed(name: &str) -> bool {
    ALLOWED.iter().any(|prefix| name.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::import_allowed;

    #[test]
    fn imports_are_checked_by_interface() {
        assert!(import_allowed("wasi:io/streams@0.2.0"));
        assert!(import_allowed("wasi:http/outgoing-handler@0.2.12"));
        assert!(import_allowed("sluice:pipeline/host@0.1.0"));
        assert!(!import_allowed("wasi:http/incoming-handler@0.2.0"));
        assert!(!import_allowed("sluice:pipeline/host@0.2.0"));
        assert!(!import_allowed("evil:host/shell"));
    }
}
