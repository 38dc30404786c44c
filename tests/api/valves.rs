use std::collections::HashMap;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::helpers::{error_of, json_of, spawn_app, spawn_app_with, Options};

const COMMENTED: &str =
    "# Operator notes: keep this header.\n\n# How many retries\nMAX = 3 # tuned in prod\n\nMODE = \"fast\"\n";

#[tokio::test]
async fn values_come_in_declaration_order_with_the_secret_masked() {
    let app = spawn_app().await;
    let res = app.get("/scripted_pipe/valves").await;
    let text = res.text().await.unwrap();
    assert_eq!(
        text,
        r#"{"API_KEY":null,"TEMPERATURE":0.7,"MAX":3,"ENABLED":true,"TAGS":["a","b"],"NOTE":null,"MODE":"fast","DESCRIBED":"x","BASE_URL":"https://api.example.com/v1"}"#
    );
}

#[tokio::test]
async fn spec_has_the_shape_open_webui_renders() {
    let app = spawn_app().await;
    let res = app.get("/v1/scripted_pipe/valves/spec").await;
    let text = res.text().await.unwrap();
    let expected = json!({"properties": {
        "API_KEY": {"default": "", "format": "password", "input": {"type": "password"}, "title": "Api Key",
                    "type": "string", "writeOnly": true},
        "TEMPERATURE": {"default": 0.7, "title": "Temperature", "type": "number"},
        "MAX": {"default": 3, "title": "Max", "type": "integer"},
        "ENABLED": {"default": true, "title": "Enabled", "type": "boolean"},
        "TAGS": {"default": ["a", "b"], "items": {"type": "string"}, "title": "Tags", "type": "array"},
        "NOTE": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": null, "title": "Note"},
        "MODE": {"default": "fast", "enum": ["fast", "slow"], "title": "Mode", "type": "string"},
        "DESCRIBED": {"default": "x", "description": "A described valve", "title": "Described", "type": "string"},
        "BASE_URL": {"default": "https://api.example.com/v1", "title": "Base Url", "type": "string"}},
     "title": "PipeValves", "type": "object"});
    // Byte-level: declaration order of properties, sorted keys inside each.
    assert_eq!(text, serde_json::to_string(&expected).unwrap());
}

#[tokio::test]
async fn an_update_as_open_webui_sends_it_is_coerced_saved_and_returned() {
    let app = spawn_app().await;
    let body = json!({"API_KEY": "good", "TEMPERATURE": "0.1", "MAX": "4", "ENABLED": false, "TAGS": "q, r",
                      "NOTE": "n", "MODE": "slow", "DESCRIBED": "d", "BASE_URL": "https://api.example.com/v1"});
    let (status, values) = json_of(app.post_json("/scripted_pipe/valves/update", &body).await).await;
    assert_eq!(status, 200, "{values}");
    assert_eq!(
        values,
        json!({"API_KEY": "********", "TEMPERATURE": 0.1, "MAX": 4, "ENABLED": false, "TAGS": ["q", "r"],
               "NOTE": "n", "MODE": "slow", "DESCRIBED": "d", "BASE_URL": "https://api.example.com/v1"})
    );
    let (_, fetched) = json_of(app.get("/scripted_pipe/valves").await).await;
    assert_eq!(fetched, values);
    let file: toml::Table = toml::from_str(&app.valves_file("scripted_pipe")).unwrap();
    assert_eq!(file["API_KEY"].as_str(), Some("good"));
    assert_eq!(file["MAX"].as_integer(), Some(4));
    assert_eq!(file["TAGS"].as_array().map(Vec::len), Some(2));
    assert!(!file.contains_key("BASE_URL"), "unchanged values stay out of the file");
    assert_eq!(app.probe.valves_updates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_partial_update_keeps_the_other_current_values() {
    let app = spawn_app().await;
    app.post_json("/scripted_pipe/valves/update", &json!({"MAX": 8, "NOTE": "kept"})).await;
    let (status, values) =
        json_of(app.post_json("/scripted_pipe/valves/update", &json!({"ENABLED": "false"})).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        (values["MAX"].clone(), values["NOTE"].clone(), values["ENABLED"].clone()),
        (json!(8), json!("kept"), json!(false))
    );
}

#[tokio::test]
async fn invalid_values_are_refused_with_every_field_and_nothing_is_written() {
    let app =
        spawn_app_with(Options { valves_files: vec![("scripted_pipe.toml", COMMENTED.into())], ..Default::default() })
            .await
            .unwrap();
    let table: &[(Value, &[&str])] = &[
        (json!({"MAX": "abc", "MODE": "medium"}), &["MAX", "MODE"]),
        (json!({"TEMPERATURE": "5"}), &["TEMPERATURE"]),
        (json!({"BASE_URL": "ftp://example.com"}), &["BASE_URL"]),
        (json!({"ENABLED": "perhaps"}), &["ENABLED"]),
        (json!({"TAGS": 5}), &["TAGS"]),
        (json!({"DESCRIBED": 12}), &["DESCRIBED"]),
        (json!({"NOPE": 1}), &["NOPE"]),
        // A value the pipeline refuses is told beside a value of the wrong type.
        (json!({"MAX": "abc", "TEMPERATURE": 5}), &["MAX", "TEMPERATURE"]),
        (json!({"TEMPERATURE": "hot", "BASE_URL": "ftp://example.com"}), &["TEMPERATURE", "BASE_URL"]),
    ];
    for (body, fields) in table {
        let (status, answer) = json_of(app.post_json("/scripted_pipe/valves/update", body).await).await;
        assert_eq!(status, 422, "{body} -> {answer}");
        let named: Vec<&str> =
            answer["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(&named, fields, "{answer}");
        let detail = answer["detail"].as_str().unwrap();
        for field in *fields {
            assert!(detail.contains(field), "{detail}");
        }
    }
    assert_eq!(app.valves_file("scripted_pipe"), COMMENTED);
    let (_, values) = json_of(app.get("/scripted_pipe/valves").await).await;
    assert_eq!((values["MAX"].clone(), values["MODE"].clone()), (json!(3), json!("fast")));
    assert_eq!(app.probe.valves_updates.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn updates_keep_the_operators_comments_and_leave_no_temp_files() {
    let app =
        spawn_app_with(Options { valves_files: vec![("scripted_pipe.toml", COMMENTED.into())], ..Default::default() })
            .await
            .unwrap();
    let res = app.post_json("/scripted_pipe/valves/update", &json!({"MAX": "5", "NOTE": "hi"})).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        app.valves_file("scripted_pipe"),
        "# Operator notes: keep this header.\n\n# How many retries\nMAX = 5 # tuned in prod\n\nMODE = \"fast\"\nNOTE = \"hi\"\n"
    );
    // null removes the key again.
    app.post_json("/scripted_pipe/valves/update", &json!({"NOTE": null})).await;
    assert!(!app.valves_file("scripted_pipe").contains("NOTE"));
    let names: Vec<String> = std::fs::read_dir(&app.valves_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["scripted_pipe.toml".to_string()]);
}

#[tokio::test]
async fn a_masked_secret_posted_back_is_never_saved() {
    let app = spawn_app().await;
    let secret = "sk-very-long-secret-value-1234";
    app.post_json("/scripted_pipe/valves/update", &json!({"API_KEY": secret})).await;
    let (_, mut values) = json_of(app.get("/scripted_pipe/valves").await).await;
    assert_eq!(values["API_KEY"], json!("********1234"));
    // The admin page posts the whole object back with one field edited.
    values["MAX"] = json!("6");
    let (status, _) = json_of(app.post_json("/scripted_pipe/valves/update", &values).await).await;
    assert_eq!(status, 200);
    let file: toml::Table = toml::from_str(&app.valves_file("scripted_pipe")).unwrap();
    assert_eq!(file["API_KEY"].as_str(), Some(secret));
    assert_eq!(file["MAX"].as_integer(), Some(6));
}

#[tokio::test]
async fn environment_values_win_are_reported_and_cannot_be_changed_over_rest() {
    let env = HashMap::from([
        ("SCRIPTED_API_KEY".to_string(), "env-secret".to_string()),
        ("SLUICE_VALVES__SCRIPTED_PIPE__MAX".to_string(), "9".to_string()),
        ("SLUICE_VALVES__SCRIPTED_PIPE__TAGS".to_string(), "x,y".to_string()),
    ]);
    let app = spawn_app_with(Options {
        env,
        valves_files: vec![("scripted_pipe.toml", COMMENTED.into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let (_, values) = json_of(app.get("/scripted_pipe/valves").await).await;
    assert_eq!(
        (values["MAX"].clone(), values["TAGS"].clone(), values["API_KEY"].clone()),
        (json!(9), json!(["x", "y"]), json!("********"))
    );
    let (_, spec) = json_of(app.get("/scripted_pipe/valves/spec").await).await;
    assert_eq!(spec["properties"]["MAX"]["readOnly"], json!(true));
    assert!(spec["properties"]["MAX"]["description"].as_str().unwrap().contains("SLUICE_VALVES__SCRIPTED_PIPE__MAX"));

    let (status, answer) = json_of(app.post_json("/scripted_pipe/valves/update", &json!({"MAX": 5})).await).await;
    assert_eq!(status, 409);
    assert!(answer["detail"].as_str().unwrap().contains("SLUICE_VALVES__SCRIPTED_PIPE__MAX"), "{answer}");

    // Posting the pinned values back unchanged (what the admin page does) is fine.
    let mut all = values.clone();
    all["MODE"] = json!("slow");
    let (status, _) = json_of(app.post_json("/scripted_pipe/valves/update", &all).await).await;
    assert_eq!(status, 200);
    let file = app.valves_file("scripted_pipe");
    assert!(
        file.contains("MAX = 3 # tuned in prod") && file.contains("MODE = \"slow\"") && !file.contains("env-secret"),
        "{file}"
    );
}

#[tokio::test]
async fn a_bad_environment_value_or_valves_file_stops_start_up_with_the_reason() {
    let env = HashMap::from([("SLUICE_VALVES__SCRIPTED_PIPE__MAX".to_string(), "lots".to_string())]);
    let err = spawn_app_with(Options { env, ..Default::default() }).await.err().unwrap();
    assert!(err.contains("SLUICE_VALVES__SCRIPTED_PIPE__MAX") && err.contains("MAX"), "{err}");

    let err = spawn_app_with(Options {
        valves_files: vec![("scripted_pipe.toml", "MAX = \"many\"\n".into())],
        ..Default::default()
    })
    .await
    .err()
    .unwrap();
    assert!(err.contains("scripted_pipe.toml") && err.contains("MAX") && err.contains("integer"), "{err}");

    let err = spawn_app_with(Options {
        valves_files: vec![("scripted_pipe.toml", "MAX = [\n".into())],
        ..Default::default()
    })
    .await
    .err()
    .unwrap();
    assert!(err.contains("scripted_pipe.toml") && err.contains("line"), "{err}");
}

#[tokio::test]
async fn a_failing_hook_is_reported_after_the_values_were_saved() {
    let app = spawn_app().await;
    let (status, answer) =
        json_of(app.post_json("/scripted_pipe/valves/update", &json!({"DESCRIBED": "fail-hook"})).await).await;
    assert_eq!(status, 500);
    assert!(answer["detail"].as_str().unwrap().contains("hook refused the new valves"), "{answer}");
    assert!(app.valves_file("scripted_pipe").contains("fail-hook"));
}

#[tokio::test]
async fn reload_reads_the_files_again_all_or_nothing() {
    let app = spawn_app().await;
    std::fs::write(app.valves_dir.join("scripted_pipe.toml"), "MAX = 11\n").unwrap();
    std::fs::write(app.valves_dir.join("scripted_filter.toml"), "priority = 4\n").unwrap();
    let (status, body) = json_of(app.post_json("/pipelines/reload", &json!(null)).await).await;
    assert_eq!((status, body), (200, json!({"message": "Pipelines reloaded successfully."})));
    let (_, values) = json_of(app.get("/scripted_pipe/valves").await).await;
    assert_eq!(values["MAX"], json!(11));

    std::fs::write(app.valves_dir.join("scripted_pipe.toml"), "MAX = 12\n").unwrap();
    std::fs::write(app.valves_dir.join("scripted_filter.toml"), "priority = \"high\"\n").unwrap();
    let (status, body) = json_of(app.post_json("/v1/pipelines/reload", &json!(null)).await).await;
    assert_eq!(status, 422);
    assert!(body["detail"].as_str().unwrap().contains("scripted_filter.toml"), "{body}");
    let (_, values) = json_of(app.get("/scripted_pipe/valves").await).await;
    assert_eq!(values["MAX"], json!(11), "nothing changes when one file is bad");
}

#[tokio::test]
async fn unknown_pipelines_and_pipelines_without_valves_are_404_json() {
    let app = spawn_app().await;
    for (path, detail) in [
        ("/nope/valves", "Pipeline nope not found"),
        ("/nope/valves/spec", "Pipeline nope not found"),
        ("/bare_filter/valves", "Valves for bare_filter not found"),
        ("/scripted_manifold.m-1/valves", "Pipeline scripted_manifold.m-1 not found"),
        ("/scripted_manifold/valves", "Valves for scripted_manifold not found"),
    ] {
        assert_eq!(error_of(app.get(path).await).await, (404, json!({"detail": detail})), "{path}");
    }
    let (status, body) = error_of(app.post_json("/nope/valves/update", &json!({})).await).await;
    assert_eq!((status, body), (404, json!({"detail": "Pipeline nope not found"})));
}

#[tokio::test]
async fn a_connection_prefix_id_is_tolerated() {
    let app = spawn_app().await;
    let (status, _) = json_of(app.get("/pp.scripted_pipe/valves").await).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn update_bodies_that_are_not_objects_are_refused() {
    let app = spawn_app().await;
    let (status, body) = json_of(app.post_json("/scripted_pipe/valves/update", &json!([1, 2])).await).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = json_of(app.post_raw("/scripted_pipe/valves/update", "{\"MAX\": ").await).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().starts_with("Malformed JSON"), "{body}");
    let (status, _) = json_of(app.post_raw("/scripted_pipe/valves/update", "").await).await;
    assert_eq!(status, 400);
}

/// Open WebUI's editor: a secret is a masked input that may stay empty (a fresh install has
/// no key), and its "Default" toggle (null) puts any valve back to its default, clearing a
/// stored key.
#[tokio::test]
async fn null_is_the_default_and_a_key_can_be_cleared() {
    let app = spawn_app().await;
    let (status, _) =
        json_of(app.post_json("/scripted_pipe/valves/update", &json!({"MAX": 9, "API_KEY": "sk-clear-me-1234"})).await)
            .await;
    assert_eq!(status, 200);
    assert!(app.valves_file("scripted_pipe").contains("MAX = 9"));
    let (status, answer) =
        json_of(app.post_json("/scripted_pipe/valves/update", &json!({"MAX": null, "API_KEY": null})).await).await;
    assert_eq!(status, 200, "{answer}");
    // An empty key is served as null: Open WebUI's admin page shows it as "None", not as a
    // required text box that blocks saving.
    assert_eq!((answer["MAX"].clone(), answer["API_KEY"].clone()), (json!(3), Value::Null));
    let file = app.valves_file("scripted_pipe");
    assert!(!file.contains("MAX") && !file.contains("API_KEY"), "{file}");
}

#[tokio::test]
async fn choices_ignore_case_and_near_misses_are_named() {
    let app = spawn_app().await;
    let (status, answer) = json_of(app.post_json("/scripted_pipe/valves/update", &json!({"MODE": "SLOW"})).await).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["MODE"], json!("slow"));
    let (status, answer) = json_of(app.post_json("/scripted_pipe/valves/update", &json!({"MODE": "fsat"})).await).await;
    assert_eq!(status, 422);
    assert!(answer["detail"].as_str().unwrap().contains("(did you mean `fast`?)"), "{answer}");
    let (_, answer) = json_of(app.post_json("/scripted_pipe/valves/update", &json!({"MAXX": 1})).await).await;
    assert!(answer["detail"].as_str().unwrap().contains("unknown valve (did you mean `MAX`?)"), "{answer}");
}

/// Every unknown key named with the list of known ones, 100,000 of them (under the 1 MiB
/// limit) answered 190 MB (red team): ten are named, the rest counted; the known ones' errors
/// are all there.
#[tokio::test]
async fn many_unknown_valves_are_counted_not_each_named() {
    let app = spawn_app().await;
    let mut body: serde_json::Map<String, Value> = (0..20_000).map(|i| (format!("K{i}"), json!(0))).collect();
    body.insert("MODE".into(), json!("fsat"));
    let response = app.post_json("/scripted_pipe/valves/update", &Value::Object(body)).await;
    let (status, answer) = json_of(response).await;
    assert_eq!(status, 422);
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 12, "{answer}");
    assert!(errors.iter().any(|e| e["message"] == "and 19990 more unknown valves"), "{answer}");
    assert!(errors.iter().any(|e| e["field"] == "MODE"), "{answer}");
    assert!(answer.to_string().len() < 20_000, "{} bytes", answer.to_string().len());
}

/// The built-in pipelines with fresh valves files in a directory of their own (kept alive by
/// the returned guard), no environment.
fn builtin_registry() -> (tempfile::TempDir, sluice::registry::Registry) {
    let dir = tempfile::tempdir().unwrap();
    let registry = sluice::registry::Registry::build(
        sluice::registry::builtin(),
        dir.path(),
        &sluice::valves::ValvesEnv::Map(HashMap::new()),
    )
    .unwrap();
    (dir, registry)
}

/// What Open WebUI's editor shows of the built-in pipelines: a help text under every valve, a
/// readable label, and the bounds that are really enforced.
#[test]
fn every_builtin_valve_has_help_a_label_and_its_real_bounds() {
    let (_dir, registry) = builtin_registry();
    for module in registry.modules() {
        let Some(valves) = &module.valves else { continue };
        let properties = valves.schema.spec["properties"].as_object().unwrap();
        for (name, property) in properties {
            let help = property["description"].as_str().unwrap_or_default();
            assert!(help.len() > 10, "{}.{name} has no help text: {property}", module.id());
            let title = property["title"].as_str().unwrap();
            assert!(!title.ends_with(" S") && !title.contains("Json") && !title.contains("Url"), "{name}: {title}");
        }
        if module.id() == "openai_responses" {
            assert_eq!(properties["MODEL_FETCH_TTL_SECONDS"]["minimum"], json!(60));
            assert_eq!(properties["REQUEST_TIMEOUT_CONNECT_S"]["title"], json!("Connect Timeout (seconds)"));
            assert_eq!(properties["SERVICE_TIER"]["anyOf"][0]["enum"], json!(["auto", "default", "flex", "priority"]));
        }
    }
}

/// The shipped, all-commented files: an edit from the editor lands where the operator reads
/// its default, and the header stays the header.
#[test]
fn edits_of_the_shipped_files_land_on_their_commented_defaults() {
    for (file, key, value) in
        [("openpipe_reporting.toml", "TIMEOUT_SECONDS", json!(30)), ("openai_responses.toml", "MAX_RETRIES", json!(4))]
    {
        let template = std::fs::read_to_string(format!("{}/valves/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let mut doc: toml_edit::DocumentMut = template.parse().unwrap();
        sluice::valves::file::set(&mut doc, key, &value).unwrap();
        let text = doc.to_string();
        assert_eq!(text.lines().next(), template.lines().next(), "{file}: the header moved");
        let at = template.lines().position(|l| l.starts_with(&format!("# {key} ="))).unwrap();
        assert_eq!(text.lines().nth(at).unwrap(), format!("{key} = {value}"), "{file}");
        assert_eq!(text.lines().count(), template.lines().count(), "{file}");
    }
}

/// An empty variable does not pin its valve: the editor may still set it.
#[tokio::test]
async fn an_empty_environment_variable_is_an_unset_one() {
    let env = HashMap::from([("SLUICE_VALVES__SCRIPTED_PIPE__MAX".to_string(), String::new())]);
    let app = spawn_app_with(Options { env, ..Default::default() }).await.unwrap();
    let (status, answer) = json_of(app.post_json("/scripted_pipe/valves/update", &json!({"MAX": 7})).await).await;
    assert_eq!(status, 200, "{answer}");
    let (_, spec) = json_of(app.get("/scripted_pipe/valves/spec").await).await;
    assert!(spec["properties"]["MAX"].get("readOnly").is_none(), "{spec}");
}

/// The shipped valves files show defaults and examples apart: a commented `# KEY = value` is
/// the built-in default, and a value that is not must say `# example`.
#[test]
fn the_shipped_files_show_each_default_as_it_is() {
    let (_dir, registry) = builtin_registry();
    for module in registry.modules() {
        let Some(valves) = &module.valves else { continue };
        let defaults = &valves.schema.spec["properties"];
        let file = format!("{}/valves/{}.toml", env!("CARGO_MANIFEST_DIR"), module.id());
        let text = std::fs::read_to_string(&file).unwrap();
        let mut shown = 0;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# ") else { continue };
            let Some((key, _)) = rest.split_once(" = ") else { continue };
            if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || defaults.get(key).is_none() {
                continue;
            }
            let parsed: toml::Table = rest.parse().unwrap_or_else(|e| panic!("{file}: {line}: {e}"));
            let value = serde_json::to_value(&parsed[key]).unwrap();
            let example = rest.split_once(" = ").unwrap().1.contains("# example");
            let default = &defaults[key]["default"];
            if !example {
                assert_eq!(&value, default, "{file}: `{line}` is not the default; mark it `# example`");
                shown += 1;
            } else {
                assert_ne!(&value, default, "{file}: `{line}` is the default, not an example");
            }
        }
        assert!(shown > 10, "{file}: {shown} defaults shown");
    }
}
