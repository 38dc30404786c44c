//! Where a stored secret may go: a secret valve is bound to the URL valve it is sent to
//! ([`sluice_sdk::Valves::sent_to`]), and to the code it was entered for. An update that moves
//! the URL must carry the secret again, a secret from the environment pins its URL, and new
//! code under an id gets no secret entered for the old one.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sluice_sdk::FieldError;

use super::{env_var_name, Pinned, ValvesEntry, ValvesEnv};

impl ValvesEntry {
    /// A stored secret goes only where it went when it was entered: an update that moves a
    /// secret's URL must carry the secret too, and a secret from the environment pins its URL
    /// to the environment ([`sluice_sdk::Valves::sent_to`]).
    pub(super) fn check_destinations(
        &self,
        changes: &[(String, Value)],
        given: &[String],
        current: &Map<String, Value>,
        pinned: &BTreeMap<String, Pinned>,
        invalid: &mut Vec<FieldError>,
        refused: &mut Vec<FieldError>,
    ) {
        let defaults = self.cell.defaults();
        // Per URL, the stored secrets a move would need given again: one error naming them
        // all (one each, the reason phrase Open WebUI logs named only the first).
        let mut missing: Vec<(&str, Vec<&str>)> = Vec::new();
        for (secret, url) in self.cell.sent_to() {
            // Where the URL goes: a `null` (the editor's Default toggle) sends it back to its
            // default, which moves nothing when it is there already.
            let moved = changes.iter().any(|(k, v)| {
                let to = if v.is_null() { defaults.get(url) } else { Some(v) };
                k == url && to != current.get(*url)
            });
            if !moved || !self.field_holds_secret(secret, current) {
                continue;
            }
            if let Some(p) = pinned.get(*secret) {
                let url_var = self
                    .cell
                    .env_aliases()
                    .iter()
                    .find(|(f, _)| f == url)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_else(|| env_var_name(&self.pipeline_id, url));
                refused.push(FieldError::new(
                    *url,
                    format!(
                        "{secret} comes from the environment variable {} and is sent to this URL; \
                         set {url_var} in the environment instead",
                        p.variable
                    ),
                ));
            } else if !given.iter().any(|g| g == secret) {
                match missing.iter_mut().find(|(u, _)| u == url) {
                    Some((_, secrets)) => secrets.push(secret),
                    None => missing.push((url, vec![secret])),
                }
            }
        }
        for (url, secrets) in missing {
            let json = secrets.iter().any(|s| self.schema.field(s).is_some_and(|f| !f.nested_secrets.is_empty()));
            invalid.push(FieldError::new(
                url,
                format!(
                    "give {} again in the same update to change this URL: the stored {} sent to it{} (a stored \
                     secret never goes to a new address unless it is entered again)",
                    secrets.join(" and "),
                    if secrets.len() == 1 { "value is" } else { "values are" },
                    if json { "; JSON with its tokens typed in, not masked" } else { "" },
                ),
            ));
        }
    }

    /// The URL valves that `to` moves away from `from` while the secret sent to them comes
    /// from this replica's environment. Text shared by another replica, whose environment may
    /// lack the key and so let the URL move, must not send this replica's key there (found by a
    /// red team). `from` and `to`: values as a valves file or the live valves hold them.
    fn moves_from_pinned(&self, env: &ValvesEnv, from: &Map<String, Value>, to: &Map<String, Value>) -> Vec<String> {
        let Ok(pinned) = self.read_env(env) else { return Vec::new() };
        let defaults = self.cell.defaults();
        let at = |values: &Map<String, Value>, url: &str| values.get(url).or_else(|| defaults.get(url)).cloned();
        self.cell
            .sent_to()
            .iter()
            .filter(|(secret, url)| pinned.contains_key(*secret) && !pinned.contains_key(*url))
            .filter(|(_, url)| at(from, url) != at(to, url))
            .map(|(_, url)| url.to_string())
            .collect()
    }

    /// `text` (a valves file shared by the replicas) with each URL it would move away from
    /// `from` while the secret sent there comes from this replica's environment put back as
    /// `from` has it, which a warning names. The rest of the text is taken: refusing it whole
    /// kept a removed pipeline's stale file, keys and all, on a replica started later (found by
    /// a reviewer).
    pub fn keep_pinned_urls(&self, env: &ValvesEnv, from: &Map<String, Value>, text: &str) -> String {
        let Ok(mut doc) = text.parse::<toml_edit::DocumentMut>() else { return text.to_string() };
        let Ok(to) = super::file::to_json(&doc) else { return text.to_string() };
        let moved = self.moves_from_pinned(env, from, &to);
        if moved.is_empty() {
            return text.to_string();
        }
        for url in &moved {
            match from.get(url.as_str()) {
                Some(value) if super::file::set(&mut doc, url, value).is_some() => {}
                _ => super::file::remove(&mut doc, url),
            }
        }
        tracing::warn!(
            pipeline = %self.pipeline_id,
            urls = moved.join(", "),
            "valves from another replica taken but these URLs kept here: a key from this replica's environment \
             goes to them; set them in the environment of every replica"
        );
        doc.to_string()
    }

    /// The confidential fields that hold secret text entered here (not set by the environment):
    /// what new code under this id must not receive unless it is entered again.
    pub fn stored_secret_fields(&self) -> Vec<String> {
        let current = match self.cell.current() {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let pinned = self.pinned.load();
        self.schema
            .fields
            .iter()
            .filter(|f| f.confidential() && !pinned.contains_key(&f.name))
            .filter(|f| self.field_holds_secret(&f.name, &current))
            .map(|f| f.name.clone())
            .collect()
    }

    /// Whether `field` holds secret text now: a secret, or tokens inside JSON text (MCP
    /// servers' headers).
    fn field_holds_secret(&self, field: &str, current: &Map<String, Value>) -> bool {
        let (Some(spec), Some(value)) = (self.schema.field(field), current.get(field)) else { return false };
        let mut found = Vec::new();
        if spec.confidential() {
            super::secret_texts_of(spec, value, &mut found);
        }
        found.iter().any(|t| !t.is_empty())
    }
}
