//! `xlb`: the command-line client of xlbd. See `xlb --help`.

use std::process::ExitCode;

use clap::Parser as _;
use clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand;
use lb_userspace::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version, and a command given without its subcommand: clap prints help.
        Err(e) if !e.use_stderr() || e.kind() == DisplayHelpOnMissingArgumentOrSubcommand => {
            e.exit()
        }
        Err(e) => {
            eprintln!("xlb: error: {}", cli::usage_error_line(e));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("xlb: error: {message}");
    ExitCode::FAILURE
}
