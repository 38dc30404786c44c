//! `SLUICE_VALVES__<PIPELINE>__<FIELD>` variables that name no pipeline or no valve. A typo
//! would otherwise be ignored while the operator believes the value is in effect, so each is
//! refused at start-up (and by `sluice check`) with the names that do exist.

use super::ValvesEnv;

const PREFIX: &str = "SLUICE_VALVES__";

/// The pipelines an override may name: each id with its valve names (none without valves).
pub struct Known<'a> {
    pub id: &'a str,
    pub fields: Vec<&'a str>,
}

/// A variable that names nothing, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unknown {
    pub variable: String,
    pub problem: String,
}

/// `VARIABLE: problem`.
impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

/// Every variable that names nothing, sorted.
pub fn unknown(env: &ValvesEnv, known: &[Known<'_>]) -> Vec<Unknown> {
    let as_env = |id: &str| id.to_uppercase().replace('-', "_");
    let mut problems = Vec::new();
    for variable in env.names() {
        let Some(rest) = strip_prefix_ignoring_case(&variable, PREFIX) else { continue };
        let Some((pipeline, field)) = rest.split_once("__") else {
            problems.push(Unknown { variable, problem: "expected SLUICE_VALVES__<PIPELINE>__<VALVE>".into() });
            continue;
        };
        let Some(module) = known.iter().find(|k| as_env(k.id) == pipeline) else {
            let ids: Vec<String> = known.iter().map(|k| as_env(k.id)).collect();
            let hint = crate::suggest::hint(pipeline, ids.iter().map(String::as_str));
            let problem = format!("no pipeline {pipeline}{hint} (pipelines: {})", ids.join(", "));
            problems.push(Unknown { variable, problem });
            continue;
        };
        if module.fields.iter().any(|f| f.to_uppercase() == field) && variable.starts_with(PREFIX) {
            continue;
        }
        let names: Vec<String> = module.fields.iter().map(|f| f.to_uppercase()).collect();
        let problem = if names.is_empty() {
            format!("{} has no valves", module.id)
        } else if names.iter().any(|n| n == field) {
            format!("write the prefix in capitals, {PREFIX}")
        } else {
            let hint = crate::suggest::hint(field, names.iter().map(String::as_str));
            format!("{} has no valve {field}{hint} (valves: {})", module.id, names.join(", "))
        };
        problems.push(Unknown { variable, problem });
    }
    problems.sort_by(|a, b| a.variable.cmp(&b.variable));
    problems
}

fn strip_prefix_ignoring_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn typos_are_named_with_what_exists() {
        let env = ValvesEnv::Map(HashMap::from([
            ("SLUICE_VALVES__OPENPIPE_REPORTING__TIMEOUT_SECONDS".to_string(), "5".to_string()),
            ("SLUICE_VALVES__OPENPIPE_REPORTING__TIMEOUT_SECOND".to_string(), "5".to_string()),
            ("SLUICE_VALVES__OPENPIPE__X".to_string(), "1".to_string()),
            ("SLUICE_VALVES__WORDS".to_string(), "1".to_string()),
            ("OPENAI_API_KEY".to_string(), "sk".to_string()),
        ]));
        let known = [
            Known { id: "openpipe_reporting", fields: vec!["TIMEOUT_SECONDS", "ENABLED"] },
            Known { id: "word-count", fields: vec![] },
        ];
        let problems: Vec<String> = unknown(&env, &known).iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("SLUICE_VALVES__OPENPIPE_REPORTING__TIMEOUT_SECOND: openpipe_reporting has no valve TIMEOUT_SECOND (did you mean `TIMEOUT_SECONDS`?)"), "{problems:?}");
        assert!(problems[1].starts_with("SLUICE_VALVES__OPENPIPE__X: no pipeline OPENPIPE"), "{problems:?}");
        assert!(problems[2].contains("expected SLUICE_VALVES__<PIPELINE>__<VALVE>"), "{problems:?}");
        let env = ValvesEnv::Map(HashMap::from([("SLUICE_VALVES__WORD_COUNT__X".to_string(), "1".to_string())]));
        assert_eq!(unknown(&env, &known)[0].to_string(), "SLUICE_VALVES__WORD_COUNT__X: word-count has no valves");
    }
}
