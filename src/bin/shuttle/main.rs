//! `shuttle`: drive a Weft fleet from the terminal, over Weft's REST and WebSocket API.
//!
//! Exit codes: 0 success; 1 the API refused the request, or the work failed; 2 bad usage
//! or configuration; 3 Weft unreachable or failing.

mod args;
mod commands;
mod config;
mod live;
mod output;
mod targets;

use std::process::ExitCode;

use clap::Parser;

use args::Cli;

fn main() -> ExitCode {
    weft::cli::exit_quietly_on_closed_pipe();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shuttle: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shuttle: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
