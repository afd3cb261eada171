//! How shuttle prints: tables for people, the API's JSON for scripts; and the small helpers
//! that build request paths.

use serde_json::Value;

use crate::config::Context;

pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let given: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref().map(|v| {
                format!(
                    "{k}={}",
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                )
            })
        })
        .collect();
    if given.is_empty() {
        String::new()
    } else {
        format!("?{}", given.join("&"))
    }
}

pub(crate) fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// Prints rows as aligned columns without borders, headers first: readable, and easy to
/// cut with `awk`.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_header(headers.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    for line in table.lines() {
        println!("{}", line.trim_end());
    }
}

pub(crate) fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(a) => a.iter().map(text_of).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

pub(crate) fn print_value(
    ctx: &Context,
    value: &Value,
    headers: &[&str],
    fields: &[&str],
    list: Option<&str>,
) {
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
        return;
    }
    let rows: Vec<Vec<String>> = match list {
        Some(key) => value[key]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|item| fields.iter().map(|f| text_of(&item[*f])).collect())
            .collect(),
        None => vec![fields.iter().map(|f| text_of(&value[*f])).collect()],
    };
    table(headers, rows);
}

pub(crate) fn print_message(ctx: &Context, value: &Value) {
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else if let Some(m) = value["message"].as_str() {
        println!("{m}");
    }
}

pub(crate) const WORK_HEADERS: [&str; 7] = [
    "ID",
    "STATUS",
    "PRIORITY",
    "CAPABILITY",
    "BOUNDARY",
    "AGENT",
    "DESCRIPTION",
];
pub(crate) const WORK_FIELDS: [&str; 7] = [
    "id",
    "status",
    "priority",
    "capability",
    "boundary",
    "assignedTo",
    "description",
];
pub(crate) const AGENT_HEADERS: [&str; 7] = [
    "GUID",
    "TYPE",
    "STATUS",
    "TASKS",
    "CAPABILITIES",
    "BOUNDARIES",
    "SOURCE",
];
pub(crate) const AGENT_FIELDS: [&str; 7] = [
    "guid",
    "agentType",
    "status",
    "currentTaskCount",
    "capabilities",
    "boundaries",
    "source",
];
pub(crate) const TARGET_HEADERS: [&str; 7] = [
    "ID",
    "NAME",
    "MECHANISM",
    "TYPE",
    "STATUS",
    "HEALTH",
    "USED",
];
pub(crate) const TARGET_FIELDS: [&str; 7] = [
    "id",
    "name",
    "mechanism",
    "agentType",
    "status",
    "healthStatus",
    "useCount",
];
