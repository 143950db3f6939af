//! `xlb-fuzz --count N --seed S`: N seeded random and mutated packets through xlb's XDP
//! program (BPF_PROG_TEST_RUN, in a private network namespace; needs root). Prints the
//! figures; exits 1 on any failed check, printing the first failing packets in hex.

use anyhow::{Result, bail};
use clap::Parser;
use xlb_xdp_harness::{Harness, fuzz, netns::in_private_netns};

#[derive(Parser)]
#[command(
    name = "xlb-fuzz",
    about = "Fuzz xlb's XDP program through BPF_PROG_TEST_RUN"
)]
struct Args {
    /// Packets to run.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Seed of the packet generator (same seed, same packets).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("xlb-fuzz needs root (it loads the XDP program)");
    }
    let fig = in_private_netns(move || -> Result<fuzz::Figures> {
        let mut h = Harness::new(fuzz::FLOW_ENTRIES)?;
        fuzz::run(&mut h, args.count, args.seed)
    })?;
    println!("{}", fig.report());
    if fig.failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}
