//! Shuttle's settings: `~/.loominal/config.json`, overridden by the environment, overridden
//! by flags; and the `config` command that reads and writes the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use weft::cli::{Api, CliError};

use crate::args::{Cli, ConfigCommand};

pub(crate) const CONFIG_KEYS: [&str; 5] = [
    "apiUrl",
    "token",
    "projectId",
    "defaultBoundary",
    "outputFormat",
];

pub(crate) fn config_path() -> Result<PathBuf, CliError> {
    let home = std::env::var_os("HOME").ok_or_else(|| CliError::Usage("HOME is not set".into()))?;
    Ok(PathBuf::from(home).join(".loominal").join("config.json"))
}

/// The config file's keys; a missing file is empty, an unreadable one an error.
pub(crate) fn read_config() -> Result<BTreeMap<String, String>, CliError> {
    let path = config_path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                CliError::Usage(format!(
                    "config file {} is not valid JSON: {e}",
                    path.display()
                ))
            })?;
            let object = value.as_object().ok_or_else(|| {
                CliError::Usage(format!(
                    "config file {} must hold a JSON object",
                    path.display()
                ))
            })?;
            Ok(object
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(CliError::Usage(format!(
            "cannot read config file {}: {e}",
            path.display()
        ))),
    }
}

pub(crate) fn write_config(config: &BTreeMap<String, String>) -> Result<(), CliError> {
    let path = config_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    let text = serde_json::to_string_pretty(config).unwrap_or_default();
    std::fs::write(&path, text + "\n")
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))
}

pub(crate) struct Context {
    pub(crate) api: Api,
    pub(crate) project: Option<String>,
    pub(crate) json: bool,
    pub(crate) default_boundary: String,
}

pub(crate) fn context(cli: &Cli) -> Result<Context, CliError> {
    let file = read_config()?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    // Flag over environment over file.
    let api_url = cli
        .api_url
        .clone()
        .or_else(|| env("WEFT_API_URL"))
        .or_else(|| file.get("apiUrl").cloned())
        .unwrap_or_else(|| "http://127.0.0.1:3000".into());
    let token = cli
        .token
        .clone()
        .or_else(|| env("WEFT_API_TOKEN"))
        .or_else(|| file.get("token").cloned());
    let project = cli
        .project
        .clone()
        .or_else(|| file.get("projectId").cloned());
    let json = cli.json || file.get("outputFormat").is_some_and(|f| f == "json");
    Ok(Context {
        api: Api::new(&api_url, token)?,
        project,
        json,
        default_boundary: file
            .get("defaultBoundary")
            .cloned()
            .unwrap_or_else(|| "personal".into()),
    })
}

pub(crate) fn config(command: &ConfigCommand) -> Result<(), CliError> {
    let mut config = read_config()?;
    match command {
        ConfigCommand::Set { key, value } => {
            if !CONFIG_KEYS.contains(&key.as_str()) {
                return Err(CliError::Usage(format!(
                    "unknown key {key}; keys: {}",
                    CONFIG_KEYS.join(", ")
                )));
            }
            if key == "outputFormat" && !["table", "json"].contains(&value.as_str()) {
                return Err(CliError::Usage("outputFormat is table or json".into()));
            }
            config.insert(key.clone(), value.clone());
            write_config(&config)
        }
        ConfigCommand::Get { key } => match config.get(key) {
            Some(v) => {
                println!("{v}");
                Ok(())
            }
            None => Err(CliError::Usage(format!("{key} is not set"))),
        },
        ConfigCommand::List => {
            for (k, v) in &config {
                let shown = if k == "token" {
                    "********".to_string()
                } else {
                    v.clone()
                };
                println!("{k}={shown}");
            }
            Ok(())
        }
    }
}
