//! A settings file that holds a secret and that others on the machine may read: said at start
//! and by `sluice check`, not changed (it is the operator's file; the files sluice writes
//! itself are 0600).

use std::path::Path;

/// The warning for the settings file at `path`, when it holds a secret (`api_key`, a
/// `store_url` with a password) and its mode lets others read it. Never quotes the secret.
pub fn warning(path: &Path) -> Option<String> {
    let mode = crate::private::others_may_read(path)?;
    let table: toml::Table = crate::small_file::read(path, "a settings file").ok()??.parse().ok()?;
    let held: Vec<&str> = ["api_key", "store_url"]
        .into_iter()
        .filter(|name| table.get(*name).and_then(toml::Value::as_str).is_some_and(|v| is_secret(name, v)))
        .collect();
    if held.is_empty() {
        return None;
    }
    let shown = path.display();
    Some(format!(
        "{shown} holds {} and others on this machine may read it (mode {mode:o}): make it readable by its owner \
         and sluice only (chmod 600 {shown} when sluice runs as its owner, chmod o-r otherwise)",
        held.join(" and ")
    ))
}

/// Whether the setting `name` holds a secret: any key; a store URL with a password, as the
/// PostgreSQL client reads it (one that does not parse may hold one all the same).
fn is_secret(name: &str, value: &str) -> bool {
    match name {
        "api_key" => !value.trim().is_empty(),
        _ => value.parse::<tokio_postgres::Config>().map_or(true, |config| config.get_password().is_some()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_a_secret_counts() {
        assert!(is_secret("api_key", "k-1234"));
        assert!(!is_secret("api_key", " "));
        assert!(is_secret("store_url", "postgres://sluice:hunter2@db/sluice"));
        assert!(is_secret("store_url", "host=db user=sluice password=hunter2"));
        assert!(is_secret("store_url", "host=db user=sluice password = hunter2"));
        assert!(is_secret("store_url", "postgres://not a url: with spaces@"));
        assert!(!is_secret("store_url", "postgres://sluice@db/sluice"));
        assert!(!is_secret("store_url", "postgres://db/sluice"));
    }

    #[cfg(unix)]
    #[test]
    fn a_readable_file_with_a_secret_is_said_and_nothing_else() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        let set = |text: &str, mode: u32| {
            std::fs::write(&file, text).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        set("port = 9200\napi_key = \"k-readable-0123456789\"\n", 0o644);
        let said = warning(&file).unwrap();
        assert!(said.contains("holds api_key and others") && said.contains("mode 644"), "{said}");
        assert!(!said.contains("k-readable"), "{said}");
        set("api_key = \"k\"\nstore_url = \"postgres://u:p@db/s\"\n", 0o640);
        assert!(warning(&file).unwrap().contains("holds api_key and store_url"));
        // Others may write or run it, not read it: nothing to say.
        set("api_key = \"k-readable-0123456789\"\n", 0o622);
        assert_eq!(warning(&file), None);
        // A FIFO is not read a second time (it would wait for a writer forever).
        let fifo = dir.path().join("fifo.toml");
        assert!(std::process::Command::new("mkfifo").args(["-m", "644"]).arg(&fifo).status().unwrap().success());
        assert_eq!(warning(&fifo), None);
        set("api_key = \"k-readable-0123456789\"\n", 0o600);
        assert_eq!(warning(&file), None);
        // Owned by another user and readable by its group: how it is shared with sluice. (Only
        // root can give a file away; elsewhere this part is skipped.)
        set("api_key = \"k-readable-0123456789\"\n", 0o640);
        if std::os::unix::fs::chown(&file, Some(65534), Some(65534)).is_ok() {
            assert_eq!(warning(&file), None);
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(warning(&file).unwrap().contains("chmod o-r otherwise"));
            std::fs::remove_file(&file).unwrap();
        }
        set("port = 9200\nstore_url = \"postgres://u@db/s\"\n", 0o644);
        assert_eq!(warning(&file), None);
        set("not toml [", 0o644);
        assert_eq!(warning(&file), None);
        assert_eq!(warning(&dir.path().join("missing.toml")), None);
    }
}
