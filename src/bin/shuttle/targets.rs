//! `shuttle targets ...`: register, list, change, test and use spin-up targets.

use reqwest::Method;
use serde_json::json;
use weft::cli::CliError;

use crate::args::TargetsCommand;
use crate::config::Context;
use crate::output::*;

pub(crate) async fn targets(ctx: &Context, command: TargetsCommand) -> Result<(), CliError> {
    let p = query(&[("projectId", ctx.project.clone())]);
    let one = |id: &str, action: &str| format!("/api/targets/{}{action}{p}", enc(id));
    match command {
        TargetsCommand::Add {
            name,
            agent_type,
            mechanism,
            capabilities,
            boundaries,
            max_agents,
            settings,
        } => {
            let mut config = settings.config();
            config.insert("mechanism".into(), mechanism.clone().into());
            let mut body = json!({"name": name, "agentType": agent_type, "mechanism": mechanism, "capabilities": capabilities, "config": config});
            if let Some(b) = boundaries {
                body["boundaries"] = b.into();
            }
            if let Some(m) = max_agents {
                body["maxAgents"] = m.into();
            }
            if let Some(project) = &ctx.project {
                body["projectId"] = project.clone().into();
            }
            let target = ctx
                .api
                .call(Method::POST, "/api/targets", Some(&body))
                .await?;
            print_value(ctx, &target, &TARGET_HEADERS, &TARGET_FIELDS, None);
        }
        TargetsCommand::List => {
            let list = ctx
                .api
                .get(&format!(
                    "/api/targets{}",
                    query(&[
                        ("projectId", ctx.project.clone()),
                        ("limit", Some("100".into()))
                    ])
                ))
                .await?;
            print_value(ctx, &list, &TARGET_HEADERS, &TARGET_FIELDS, Some("targets"));
        }
        TargetsCommand::Show { id } => {
            let target = ctx.api.get(&one(&id, "")).await?;
            print_value(ctx, &target, &TARGET_HEADERS, &TARGET_FIELDS, None);
        }
        TargetsCommand::Update {
            id,
            description,
            capabilities,
            boundaries,
            settings,
        } => {
            let mut body = json!({});
            if let Some(d) = description {
                body["description"] = d.into();
            }
            if let Some(c) = capabilities {
                body["capabilities"] = c.into();
            }
            if let Some(b) = boundaries {
                body["boundaries"] = b.into();
            }
            let config = settings.config();
            if !config.is_empty() {
                body["config"] = config.into();
            }
            let target = ctx
                .api
                .call(Method::PUT, &one(&id, ""), Some(&body))
                .await?;
            print_value(ctx, &target, &TARGET_HEADERS, &TARGET_FIELDS, None);
        }
        TargetsCommand::Remove { id } => print_message(
            ctx,
            &ctx.api.call(Method::DELETE, &one(&id, ""), None).await?,
        ),
        TargetsCommand::Enable { id } => print_message(
            ctx,
            &ctx.api
                .call(Method::POST, &one(&id, "/enable"), None)
                .await?,
        ),
        TargetsCommand::Disable { id } => print_message(
            ctx,
            &ctx.api
                .call(Method::POST, &one(&id, "/disable"), None)
                .await?,
        ),
        TargetsCommand::Test { id } => {
            let result = ctx.api.call(Method::POST, &one(&id, "/test"), None).await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&result).unwrap_or_default()
                );
            } else if result["healthy"] == true {
                println!("healthy ({} ms)", text_of(&result["latencyMs"]));
            } else {
                println!("unhealthy: {}", text_of(&result["error"]));
            }
            if result["healthy"] != true {
                return Err(CliError::Refused(format!("target {id} is unhealthy")));
            }
        }
        TargetsCommand::SpinUp { id } => {
            let result = ctx
                .api
                .call(Method::POST, &one(&id, "/spin-up"), None)
                .await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&result).unwrap_or_default()
                );
            } else {
                println!(
                    "spin-up {} on {}: {}",
                    text_of(&result["operationId"]),
                    text_of(&result["targetName"]),
                    text_of(&result["status"])
                );
            }
            if result["success"] != true {
                return Err(CliError::Refused(text_of(&result["error"])));
            }
        }
    }
    Ok(())
}
