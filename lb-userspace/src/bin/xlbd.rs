//! `xlbd`: xlb's daemon. See `xlbd --help`.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use lb_userspace::bpf::BpfDataplane;
use lb_userspace::cli;
use lb_userspace::daemon::{self, Args};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("xlbd: error: {}", cli::usage_error_line(e));
            return ExitCode::from(2);
        }
    };
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlbd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    let filter = match &args.log_level {
        Some(level) => EnvFilter::try_new(level).context("invalid --log-level")?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    if args.decap {
        return runtime.block_on(lb_userspace::decap::run(
            &args.ifaces,
            args.mode(),
            args.object.as_deref(),
        ));
    }
    let encap =
        lb_userspace::forwarding::encap_config(&args.encap_source_v4, &args.encap_source_v6)?;
    runtime.block_on(daemon::run(args, move |opts| {
        let mut dp = BpfDataplane::load(opts)?;
        dp.set_encap(&encap)?;
        Ok(dp)
    }))?;
    Ok(())
}
