//! The settings file as figment reads it, but read as [`crate::small_file`] reads (a FIFO or
//! an endless file in its place hung or filled every command) and refused when another user
//! may have put it there ([`crate::private::planted`]).

use std::path::PathBuf;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map};
use figment::{Metadata, Profile, Provider};

/// `Toml::file_exact(path)`, within those bounds.
pub struct SettingsFile(pub PathBuf);

impl Provider for SettingsFile {
    fn metadata(&self) -> Metadata {
        // What figment's own file provider says, so errors name the file the same way.
        Metadata::from("TOML file", self.0.as_path())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        // The errors are said after the file's name (config::explain).
        let text = match crate::small_file::read(&self.0, "a settings file") {
            Ok(Some(text)) => text,
            Ok(None) => return Err("no such file".to_string().into()),
            Err(e) => return Err(format!("cannot be read: {e}").into()),
        };
        if let Some(why) = crate::private::planted(&self.0) {
            return Err(format!("not read: {why}").into());
        }
        Toml::string(&text).data()
    }
}
