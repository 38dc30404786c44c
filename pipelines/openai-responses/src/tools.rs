//! Tools and output formats in the Responses API's flat shapes (docs/manifold.md §4.4).

use serde_json::{json, Map, Value};

/// Open WebUI's `{"type":"function","function":{...}}` tools → flat Responses function tools.
pub fn function_tools(tools: Option<&Value>, strict: bool) -> Vec<Value> {
    let Some(Value::Array(list)) = tools else { return Vec::new() };
    list.iter()
        .filter_map(|t| {
            let f = t.get("function").unwrap_or(t);
            let name = f.get("name")?.as_str()?;
            let description = f.get("description").and_then(Value::as_str).filter(|d| !d.is_empty()).unwrap_or(name);
            let parameters = f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            let (parameters, strict) = if strict {
                match strictify(&parameters) {
                    Some(p) => (p, true),
                    None => (parameters, false),
                }
            } else {
                (parameters, false)
            };
            Some(json!({"type": "function", "name": name, "description": description, "parameters": parameters, "strict": strict}))
        })
        .collect()
}

/// Strict form: every object closed, every property required, optional ones nullable.
/// `None` when the schema uses features strict mode cannot express.
pub fn strictify(schema: &Value) -> Option<Value> {
    let root = if schema.get("type").and_then(Value::as_str) == Some("object") {
        schema.clone()
    } else {
        json!({"type": "object", "properties": {"value": schema}, "required": ["value"], "additionalProperties": false})
    };
    let mut root = root;
    strict_node(&mut root).then_some(root)
}

fn strict_node(node: &mut Value) -> bool {
    let Some(map) = node.as_object_mut() else { return true };
    if map.contains_key("$ref") || map.contains_key("patternProperties") {
        return false;
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(branches)) = map.get_mut(key) {
            if !branches.iter_mut().all(strict_node) {
                return false;
            }
        }
    }
    if let Some(items) = map.get_mut("items") {
        if !strict_node(items) {
            return false;
        }
    }
    let is_object = map.get("type").and_then(Value::as_str) == Some("object") || map.contains_key("properties");
    if !is_object {
        return true;
    }
    let required: Vec<String> = map
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let mut names = Vec::new();
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        for (name, prop) in props.iter_mut() {
            names.push(Value::from(name.clone()));
            if !strict_node(prop) {
                return false;
            }
            if !required.contains(name) {
                make_nullable(prop);
            }
        }
    } else {
        map.insert("properties".into(), Value::Object(Map::new()));
    }
    map.insert("required".into(), Value::Array(names));
    map.insert("additionalProperties".into(), false.into());
    true
}

fn make_nullable(prop: &mut Value) {
    let Some(map) = prop.as_object_mut() else { return };
    match map.get_mut("type") {
        Some(Value::String(t)) if t != "null" => {
            let t = t.clone();
            map.insert("type".into(), json!([t, "null"]));
        }
        Some(Value::Array(types)) if !types.iter().any(|t| t == "null") => types.push("null".into()),
        Some(_) => {}
        None => return,
    }
    if let Some(Value::Array(values)) = map.get_mut("enum") {
        if !values.iter().any(Value::is_null) {
            values.push(Value::Null);
        }
    }
}

/// `REMOTE_MCP_SERVERS_JSON` entries → hosted `mcp` tools; approval forced to "never" because a
/// pipe cannot show approval round trips (§6.3).
pub fn mcp_tools(servers: &[Value]) -> Vec<Value> {
    servers
        .iter()
        .filter_map(|s| {
            let mut tool = Map::new();
            tool.insert("type".into(), "mcp".into());
            tool.insert("server_label".into(), s.get("server_label")?.as_str()?.into());
            tool.insert("server_url".into(), s.get("server_url")?.as_str()?.into());
            tool.insert(
                "require_approval".into(),
                s.get("require_approval").cloned().unwrap_or_else(|| "never".into()),
            );
            // `authorization` is the OAuth token OpenAI passes to the server (a secret, masked
            // in the valves like `headers`).
            for key in ["allowed_tools", "headers", "authorization"] {
                if let Some(v) = s.get(key) {
                    tool.insert(key.into(), v.clone());
                }
            }
            Some(Value::Object(tool))
        })
        .collect()
}

/// Later tools win: functions by name, other tools by type.
pub fn dedupe(tools: Vec<Value>) -> Vec<Value> {
    let key = |t: &Value| -> String {
        let kind = t.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "function" => format!("function:{}", t.get("name").and_then(Value::as_str).unwrap_or_default()),
            "mcp" => format!("mcp:{}", t.get("server_label").and_then(Value::as_str).unwrap_or_default()),
            other => other.to_string(),
        }
    };
    let mut out: Vec<Value> = Vec::new();
    for tool in tools {
        let k = key(&tool);
        out.retain(|t| key(t) != k);
        out.push(tool);
    }
    out
}

/// `tool_choice`: strings as is; the chat form of a named function → the flat form.
pub fn tool_choice(choice: &Value) -> Option<Value> {
    match choice {
        Value::String(_) => Some(choice.clone()),
        Value::Object(o) => {
            let name = o.get("function").and_then(|f| f.get("name")).or_else(|| o.get("name"))?;
            Some(json!({"type": "function", "name": name}))
        }
        _ => None,
    }
}

/// `response_format` → `text.format`.
pub fn text_format(format: &Value) -> Option<Value> {
    match format.get("type").and_then(Value::as_str)? {
        "json_schema" => {
            let spec = format.get("json_schema")?;
            let mut out = Map::new();
            out.insert("type".into(), "json_schema".into());
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = spec.get(key) {
                    out.insert(key.into(), v.clone());
                }
            }
            Some(Value::Object(out))
        }
        "json_object" => Some(json!({"type": "json_object"})),
        "text" => Some(json!({"type": "text"})),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_webui_tools_become_strict_flat_tools() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}]);
        let out = function_tools(Some(&tools), true);
        assert_eq!(
            serde_json::to_string(&out[0]).unwrap_or_default(),
            r#"{"type":"function","name":"get_weather","description":"Get the current weather for a city.","parameters":{"type":"object","properties":{"city":{"type":"string","description":"City name"},"unit":{"type":["string","null"],"enum":["c","f",null]}},"required":["city","unit"],"additionalProperties":false},"strict":true}"#
        );
    }

    #[test]
    fn schemas_strict_mode_cannot_express_are_sent_non_strict() {
        let tools = json!([{"type": "function", "function": {"name": "x", "parameters": {"type": "object", "properties": {"a": {"$ref": "#/defs/A"}}}}}]);
        assert_eq!(function_tools(Some(&tools), true)[0]["strict"], json!(false));
        let tools = json!([{"type": "function", "function": {"name": "y"}}]);
        let out = function_tools(Some(&tools), true);
        assert_eq!(out[0]["description"], json!("y"));
        assert_eq!(
            out[0]["parameters"],
            json!({"type": "object", "properties": {}, "required": [], "additionalProperties": false})
        );
    }

    #[test]
    fn later_tools_win() {
        let out = dedupe(vec![
            json!({"type": "function", "name": "a", "v": 1}),
            json!({"type": "web_search"}),
            json!({"type": "function", "name": "a", "v": 2}),
        ]);
        assert_eq!(out, vec![json!({"type": "web_search"}), json!({"type": "function", "name": "a", "v": 2})]);
    }
}
