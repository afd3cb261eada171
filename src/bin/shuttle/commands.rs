//! Runs a parsed command line: agents, work, stats, projects, events and watch here;
//! config and targets in their own modules.

use clap::CommandFactory;
use reqwest::Method;
use serde_json::{json, Value};
use weft::cli::{print_events, CliError, EventQuery};

use crate::args::*;
use crate::config::{config, context};
use crate::live::{follow_task, wait_for, watch};
use crate::output::*;
use crate::targets::targets;

pub(crate) async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "shuttle",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    if let Command::Config(c) = &cli.command {
        return config(c);
    }
    let ctx = context(&cli)?;
    let p = || query(&[("projectId", ctx.project.clone())]);
    match cli.command {
        Command::Config(_) | Command::Completions { .. } => Ok(()),
        Command::Usage { group_by } => {
            let report = ctx
                .api
                .get(&format!(
                    "/api/usage{}",
                    query(&[
                        ("groupBy", Some(group_by)),
                        ("projectId", ctx.project.clone())
                    ])
                ))
                .await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
                return Ok(());
            }
            let row = |line: &serde_json::Value| {
                let u = &line["usage"];
                vec![
                    text_of(&line["key"]),
                    text_of(&line["items"]),
                    text_of(&line["attempts"]),
                    u["costUsd"]
                        .as_f64()
                        .map_or("-".into(), |c| format!("${c:.4}")),
                    text_of(&u["inputTokens"]),
                    text_of(&u["outputTokens"]),
                    text_of(&u["premiumRequests"]),
                ]
            };
            let mut rows: Vec<Vec<String>> = report["lines"]
                .as_array()
                .into_iter()
                .flatten()
                .map(row)
                .collect();
            rows.push(row(&report["total"]));
            table(
                &[
                    &report["groupBy"].as_str().unwrap_or("key").to_uppercase(),
                    "ITEMS",
                    "ATTEMPTS",
                    "COST",
                    "INPUT TOKENS",
                    "OUTPUT TOKENS",
                    "PREMIUM REQUESTS",
                ],
                rows,
            );
            Ok(())
        }
        Command::Tokens(command) => tokens(&ctx, command).await,
        Command::Stats => {
            let stats = ctx.api.get("/api/stats").await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&stats).unwrap_or_default()
                );
            } else {
                let t = &stats["totals"];
                table(
                    &[
                        "PROJECTS",
                        "AGENTS",
                        "PENDING",
                        "ACTIVE",
                        "COMPLETED",
                        "FAILED",
                        "TARGETS",
                    ],
                    vec![vec![
                        text_of(&stats["totalProjects"]),
                        text_of(&t["agents"]),
                        text_of(&t["pendingWork"]),
                        text_of(&t["activeWork"]),
                        text_of(&t["completedWork"]),
                        text_of(&t["failedWork"]),
                        text_of(&t["targets"]),
                    ]],
                );
            }
            Ok(())
        }
        Command::Projects => {
            let projects = ctx.api.get("/api/stats/projects").await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&projects).unwrap_or_default()
                );
            } else {
                table(
                    &["PROJECT"],
                    projects["projects"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| vec![text_of(p)])
                        .collect(),
                );
            }
            Ok(())
        }
        Command::Events {
            event_type,
            aggregate,
            after,
            follow,
        } => {
            let q = EventQuery {
                project: ctx.project.clone(),
                aggregate,
                aggregate_id: None,
                event_type,
                after,
                follow,
                json: ctx.json,
            };
            print_events(&ctx.api, &q).await
        }
        Command::Watch => watch(&ctx).await,
        Command::Agents(AgentsCommand::List {
            agent_type,
            status,
            capability,
        }) => {
            let list = ctx
                .api
                .get(&format!(
                    "/api/agents{}",
                    query(&[
                        ("type", agent_type),
                        ("status", status),
                        ("capability", capability),
                        ("projectId", ctx.project.clone()),
                        ("limit", Some("100".into()))
                    ])
                ))
                .await?;
            print_value(&ctx, &list, &AGENT_HEADERS, &AGENT_FIELDS, Some("agents"));
            Ok(())
        }
        Command::Agents(AgentsCommand::Show { guid }) => {
            let agent = ctx.api.get(&format!("/api/agents/{}", enc(&guid))).await?;
            print_value(&ctx, &agent, &AGENT_HEADERS, &AGENT_FIELDS, None);
            Ok(())
        }
        Command::Agents(AgentsCommand::Resume { guid }) => {
            let agent = ctx
                .api
                .call(
                    Method::POST,
                    &format!("/api/agents/{}/resume", enc(&guid)),
                    None,
                )
                .await?;
            print_value(&ctx, &agent, &AGENT_HEADERS, &AGENT_FIELDS, None);
            Ok(())
        }
        Command::Agents(AgentsCommand::Shutdown { guid, force }) => {
            let reply = ctx
                .api
                .call(
                    Method::POST,
                    &format!("/api/agents/{}/shutdown", enc(&guid)),
                    Some(&json!({"graceful": !force})),
                )
                .await?;
            print_message(&ctx, &reply);
            Ok(())
        }
        Command::Work(WorkCommand::Submit {
            description,
            capability,
            boundary,
            priority,
            task_id,
            preferred_agent_type,
            required_agent_type,
            wait,
        }) => {
            let task_id = task_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let mut body = json!({
                "taskId": task_id, "description": description, "capability": capability,
                "boundary": boundary.unwrap_or(ctx.default_boundary.clone()),
            });
            for (k, v) in [
                ("priority", priority.map(Value::from)),
                ("preferredAgentType", preferred_agent_type.map(Value::from)),
                ("requiredAgentType", required_agent_type.map(Value::from)),
                ("projectId", ctx.project.clone().map(Value::from)),
            ] {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            // Listen before submitting, so not even a fast item is missed.
            let follower = if wait {
                Some(follow_task(&ctx, &task_id).await?)
            } else {
                None
            };
            let created = ctx.api.call(Method::POST, "/api/work", Some(&body)).await?;
            if ctx.json && follower.is_none() {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&created).unwrap_or_default()
                );
            } else if !ctx.json {
                println!(
                    "submitted {} (task {task_id}), routed to {}",
                    text_of(&created["id"]),
                    text_of(&created["targetAgentType"])
                );
            }
            match follower {
                None => Ok(()),
                Some(socket) => wait_for(&ctx, socket, text_of(&created["id"])).await,
            }
        }
        Command::Work(WorkCommand::List {
            status,
            boundary,
            capability,
        }) => {
            let list = ctx
                .api
                .get(&format!(
                    "/api/work{}",
                    query(&[
                        ("status", status),
                        ("boundary", boundary),
                        ("capability", capability),
                        ("projectId", ctx.project.clone()),
                        ("limit", Some("100".into()))
                    ])
                ))
                .await?;
            print_value(&ctx, &list, &WORK_HEADERS, &WORK_FIELDS, Some("workItems"));
            Ok(())
        }
        Command::Work(WorkCommand::Show { id }) => {
            let item = ctx
                .api
                .get(&format!("/api/work/{}{}", enc(&id), p()))
                .await?;
            print_value(&ctx, &item, &WORK_HEADERS, &WORK_FIELDS, None);
            Ok(())
        }
        Command::Work(WorkCommand::History { id }) => {
            let q = EventQuery {
                project: ctx.project.clone(),
                aggregate: Some("work".into()),
                aggregate_id: Some(id),
                event_type: None,
                after: 0,
                follow: false,
                json: ctx.json,
            };
            print_events(&ctx.api, &q).await
        }
        Command::Work(WorkCommand::Logs { id, follow }) => {
            let page = |after: u64| {
                let path = format!(
                    "/api/work/{}/output{}",
                    enc(&id),
                    query(&[
                        ("after", Some(after.to_string())),
                        ("limit", Some("1000".into())),
                        ("projectId", ctx.project.clone()),
                    ])
                );
                let api = &ctx.api;
                async move { api.get(&path).await }
            };
            let mut after = 0;
            // Once the item is finished, one more read takes what its agent sent last.
            let mut finished = false;
            loop {
                let body = page(after).await?;
                for line in body["lines"].as_array().into_iter().flatten() {
                    if ctx.json {
                        println!("{line}");
                    } else {
                        println!("{}", text_of(&line["text"]));
                    }
                }
                after = body["nextAfter"].as_u64().unwrap_or(after);
                if body["hasMore"].as_bool() == Some(true) {
                    continue;
                }
                if !follow || finished {
                    return Ok(());
                }
                let item = ctx
                    .api
                    .get(&format!("/api/work/{}{}", enc(&id), p()))
                    .await?;
                // A failed attempt is retried: only these end an item's output.
                finished = matches!(
                    item["status"].as_str(),
                    Some("completed" | "cancelled" | "dead-lettered")
                );
                if !finished {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
        Command::Work(WorkCommand::Explain {
            id,
            capability,
            boundary,
            description,
        }) => {
            let explained = match id {
                Some(id) => {
                    ctx.api
                        .get(&format!("/api/work/{}/routing{}", enc(&id), p()))
                        .await?
                }
                None => {
                    let body = json!({
                        "description": description,
                        "capability": capability,
                        "boundary": boundary.unwrap_or_else(|| ctx.default_boundary.clone()),
                    });
                    ctx.api
                        .call(
                            Method::POST,
                            &format!("/api/work/explain{}", p()),
                            Some(&body),
                        )
                        .await?
                }
            };
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&explained).unwrap_or_default()
                );
                return Ok(());
            }
            println!("rule: {}", text_of(&explained["rule"]));
            let rows = |kind: &str, list: &Value| -> Vec<Vec<String>> {
                list.as_array()
                    .map(|l| {
                        l.iter()
                            .map(|c| {
                                let reasons = c["reasons"]
                                    .as_array()
                                    .map(|r| r.iter().map(text_of).collect::<Vec<_>>().join(", "))
                                    .unwrap_or_default();
                                vec![
                                    kind.to_string(),
                                    text_of(&c["name"]),
                                    text_of(&c["agentType"]),
                                    if c["eligible"] == true {
                                        "yes".into()
                                    } else {
                                        "no".into()
                                    },
                                    reasons,
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let mut all = rows("agent", &explained["agents"]);
            all.extend(rows("target", &explained["targets"]));
            table(&["KIND", "NAME", "TYPE", "ELIGIBLE", "WHY NOT"], all);
            println!(
                "chosen agent: {}; spin-up: {}{}",
                text_of(&explained["chosenAgent"]),
                if explained["spinUp"] == true {
                    "yes"
                } else {
                    "no"
                },
                explained["chosenTarget"]
                    .as_str()
                    .map(|t| format!(" on {t}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Command::Work(WorkCommand::Cancel { id }) => {
            let reply = ctx
                .api
                .call(
                    Method::POST,
                    &format!("/api/work/{}/cancel{}", enc(&id), p()),
                    None,
                )
                .await?;
            print_message(&ctx, &reply);
            Ok(())
        }
        Command::Work(WorkCommand::Retry { id }) => {
            let reply = ctx
                .api
                .call(
                    Method::POST,
                    &format!("/api/work/{}/retry{}", enc(&id), p()),
                    None,
                )
                .await?;
            print_message(&ctx, &reply);
            Ok(())
        }
        Command::Targets(command) => targets(&ctx, *command).await,
    }
}

const TOKEN_HEADERS: [&str; 6] = ["ID", "NAME", "ROLE", "PROJECTS", "STATUS", "EXPIRES"];

fn token_row(t: &Value) -> Vec<String> {
    let projects = t["projects"].as_array().map_or("all".to_string(), |p| {
        p.iter().map(text_of).collect::<Vec<_>>().join(",")
    });
    vec![
        text_of(&t["id"]),
        text_of(&t["name"]),
        text_of(&t["role"]),
        projects,
        text_of(&t["status"]),
        text_of(&t["expiresAt"]),
    ]
}

async fn tokens(ctx: &crate::config::Context, command: TokensCommand) -> Result<(), CliError> {
    let answer = match command {
        TokensCommand::Create {
            name,
            role,
            projects,
            expires_at,
        } => {
            let mut body = json!({"name": name, "role": role});
            if !projects.is_empty() {
                body["projects"] = json!(projects);
            }
            if let Some(at) = expires_at {
                body["expiresAt"] = json!(at);
            }
            let created = ctx
                .api
                .call(Method::POST, "/api/tokens", Some(&body))
                .await?;
            if !ctx.json {
                table(&TOKEN_HEADERS, vec![token_row(&created["token"])]);
                println!("secret (shown once): {}", text_of(&created["secret"]));
                return Ok(());
            }
            created
        }
        TokensCommand::List => {
            let list = ctx.api.get("/api/tokens").await?;
            if !ctx.json {
                let rows = list["tokens"]
                    .as_array()
                    .map(|t| t.iter().map(token_row).collect())
                    .unwrap_or_default();
                table(&TOKEN_HEADERS, rows);
                return Ok(());
            }
            list
        }
        TokensCommand::Revoke { id } => {
            let revoked = ctx
                .api
                .call(Method::DELETE, &format!("/api/tokens/{}", enc(&id)), None)
                .await?;
            if !ctx.json {
                table(&TOKEN_HEADERS, vec![token_row(&revoked)]);
                return Ok(());
            }
            revoked
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).unwrap_or_default()
    );
    Ok(())
}
