use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A client command whose output goes to a pipe that closes (`sluice consume t | head`) ends
/// quietly, as other command-line tools do, instead of panicking in `println!`. Rust ignores
/// SIGPIPE so that a program sees EPIPE instead; `serve` keeps that (its sockets are written
/// with MSG_NOSIGNAL either way).
fn end_quietly_on_closed_pipes() {
    // SAFETY: sets a signal's disposition to the default, at start, before any thread runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = sluice::cli::Cli::parse();
    let default_level = match cli.command {
        sluice::cli::Command::Serve(_) | sluice::cli::Command::Worker(_) => "info",
        _ => {
            end_quietly_on_closed_pipes();
            "warn"
        }
    };
    let filter =
        EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        sluice::cli::LogFormat::Human => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        sluice::cli::LogFormat::Json => {
            sluice::server::set_json_logs(true);
            logs.json()
                .with_current_span(true)
                .with_span_list(true)
                .init()
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sluice::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message
/// already holds (the library's messages name their cause, and also return it as `source()`).
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
