//! The API key from the environment, taken as the text it is. figment's `Env` reads values as
//! TOML-like literals: `123456789` became a number (refused, with the key quoted in the
//! error), `00123` the number 123, `"k"` the string `k`, and surrounding spaces were trimmed,
//! so the key in effect was not the one the operator (or `docker run --env-file`) gave.

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

/// `api_key` from the variable named `.0` (any case), when it is set and not empty.
pub struct KeyVariable(pub &'static str);

impl Provider for KeyVariable {
    fn metadata(&self) -> Metadata {
        // `explain::origin` names the variable from this.
        Metadata::named(format!("environment variable {}", self.0))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut dict = Dict::new();
        if let Some(value) = super::variable(self.0) {
            let text = value
                .into_string()
                .map_err(|_| Error::from(format!("{} is not UTF-8 text (the value is not shown)", self.0)))?;
            dict.insert("api_key".into(), Value::from(text));
        }
        Ok(Profile::Default.collect(dict))
    }
}
