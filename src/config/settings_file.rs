//! The settings file as figment reads it, but read as [`crate::small_file`] reads (a FIFO or
//! an endless file in its place hung or filled every command), and the `sluice.toml` found in
//! the working directory refused when another user may have put it there
//! ([`crate::private::planted`]). A file the operator named (`SLUICE_CONFIG`) is theirs.

use std::path::PathBuf;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map};
use figment::{Metadata, Profile, Provider};

/// `Toml::file_exact(path)`, within those bounds.
pub struct SettingsFile {
    pub path: PathBuf,
    /// Found in the working directory, not named by the operator.
    pub found: bool,
}

impl Provider for SettingsFile {
    fn metadata(&self) -> Metadata {
        // What figment's own file provider says, so errors name the file the same way.
        Metadata::from("TOML file", self.path.as_path())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        // The errors are said after the file's name (config::explain).
        let (text, opened) = match crate::small_file::read_opened(&self.path, "a settings file") {
            Ok(Some(read)) => read,
            Ok(None) => return Err("no such file".to_string().into()),
            Err(e) => return Err(format!("cannot be read: {e}").into()),
        };
        // Judged by the file that was read, not by what the path names a moment later.
        if let Some(why) = self.found.then(|| crate::private::planted(&self.path, &opened)).flatten() {
            return Err(format!("not read: {why} (name it in SLUICE_CONFIG if it is yours)").into());
        }
        Toml::string(&text).data()
    }
}
