//! The `weft` binary: `serve`, `agent`, `openapi` and the other subcommands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft::config::ServeConfig;

/// Most of a request's work is allocating and freeing small strings and tree nodes;
/// mimalloc does that with less time in the allocator than the system's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
/// Weft: routes work to AI coding agents, starts them on demand, records everything.
#[derive(Parser)]
#[command(name = "weft", version, about)]
struct Cli {
    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,
    /// `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator (REST API, event log, projections).
    Serve(ServeConfig),
    /// Join the fleet: register with Weft and run a command for each work item.
    Agent(weft::agent::AgentConfig),
    /// Join the fleet as an MCP server on stdio, for an interactive agent session (Claude
    /// Code, Copilot CLI, Codex): its tools take work, report on it and hand sub-tasks on.
    Mcp(weft::mcp::McpConfig),
    /// Print the OpenAPI spec (YAML).
    Openapi,
    /// Print the event log: who changed what, when.
    Events(EventsArgs),
    /// Check the event log and what was derived from it.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum EventsAction {
    /// Write the log's events, decoded, as JSON lines to standard output.
    Export {
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Only events after this sequence.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Only this project's events.
        #[arg(long, short = 'p')]
        project: Option<String>,
    },
    /// Append an export's events, in order, to an empty log.
    Import {
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// The export (JSON lines); `-` for standard input.
        file: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Rebuild every projection from the first event; check that sequences have no gaps,
    /// that every event is readable, and that the stored snapshot (and, with --api-url, a
    /// running Weft's state) equals the replay. Exits 1 on any mismatch.
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// NATS holding the log: a server or a comma-separated list.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// A running Weft whose state is compared with the replay.
    #[arg(long)]
    api_url: Option<String>,
    /// Bearer token for --api-url.
    #[arg(long, env = "WEFT_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct EventsArgs {
    #[command(subcommand)]
    action: Option<EventsAction>,
    /// Weft's API.
    #[arg(long, env = "WEFT_API_URL", default_value = "http://127.0.0.1:3000")]
    api_url: String,
    /// Bearer token, when the API requires one.
    #[arg(long, env = "WEFT_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Only this project.
    #[arg(long, short = 'p')]
    project: Option<String>,
    /// Only this aggregate kind (e.g. target).
    #[arg(long)]
    aggregate: Option<String>,
    /// Only this aggregate id.
    #[arg(long)]
    aggregate_id: Option<String>,
    /// Only this event type (e.g. target.registered).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Start after this sequence.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Keep printing new events as they are recorded.
    #[arg(long, short = 'f')]
    follow: bool,
    /// One JSON object per line instead of columns.
    #[arg(long)]
    json: bool,
}

fn init_logging(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    weft::mechanism::install_crypto_provider();
    match cli.command {
        Command::Openapi => {
            print!("{}", weft::api::spec_yaml());
            ExitCode::SUCCESS
        }
        Command::Serve(config) => {
            init_logging(&cli.log_level, &cli.log_format);
            let outcome = runtime()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(weft::serve::run(config)));
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("weft: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Mcp(config) => {
            // Logs go to stderr: stdout is the MCP session.
            init_logging(&cli.log_level, &cli.log_format);
            match runtime()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(weft::mcp::run(config)))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weft mcp: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Agent(config) => {
            init_logging(&cli.log_level, &cli.log_format);
            match runtime()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(weft::agent::run(config)))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weft agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Audit(AuditCommand::Verify(args)) => {
            init_logging("warn", &cli.log_format);
            audit_verify(args)
        }
        Command::Events(EventsArgs {
            action: Some(action),
            ..
        }) => {
            init_logging("warn", &cli.log_format);
            events_archive(action)
        }
        Command::Events(args) => {
            weft::cli::exit_quietly_on_closed_pipe();
            init_logging("warn", &cli.log_format);
            let outcome = runtime()
                .map_err(|e| weft::cli::CliError::Usage(e.to_string()))
                .and_then(|rt| rt.block_on(print_events(args)));
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weft events: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
    }
}

fn events_archive(action: EventsAction) -> ExitCode {
    let outcome = runtime().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(async {
            match action {
                EventsAction::Export {
                    nats_url,
                    after,
                    project,
                } => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    let n =
                        weft::audit::export(&nats_url, after, project.as_deref(), &mut out).await?;
                    eprintln!("exported {n} events");
                    Ok(())
                }
                EventsAction::Import { nats_url, file } => {
                    let n = if file == "-" {
                        weft::audit::import(&nats_url, std::io::stdin().lock()).await?
                    } else {
                        let f = std::fs::File::open(&file)
                            .map_err(|e| format!("cannot read {file}: {e}"))?;
                        weft::audit::import(&nats_url, std::io::BufReader::new(f)).await?
                    };
                    eprintln!("imported {n} events");
                    Ok(())
                }
            }
        })
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft events: {e}");
            ExitCode::FAILURE
        }
    }
}

fn audit_verify(args: VerifyArgs) -> ExitCode {
    let outcome = runtime().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(weft::audit::verify(
            &args.nats_url,
            args.api_url.as_deref(),
            args.token.as_deref(),
        ))
    });
    match outcome {
        Ok(report) => {
            for check in &report.checks {
                println!("{} {}", if check.ok { "ok  " } else { "FAIL" }, check.what);
            }
            println!(
                "replayed {} events to sequence {}: digest {}",
                report.events, report.sequence, report.digest
            );
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("weft audit verify: {e}");
            ExitCode::from(3)
        }
    }
}

async fn print_events(args: EventsArgs) -> Result<(), weft::cli::CliError> {
    let api = weft::cli::Api::new(&args.api_url, args.token)?;
    let query = weft::cli::EventQuery {
        project: args.project,
        aggregate: args.aggregate,
        aggregate_id: args.aggregate_id,
        event_type: args.event_type,
        after: args.after,
        follow: args.follow,
        json: args.json,
    };
    weft::cli::print_events(&api, &query).await
}
