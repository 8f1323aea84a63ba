//! `hotfuzz`: fuzzes and regression-tests Linux memory hotplug in QEMU guests.

mod cli;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOTFUZZ_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if cli.verbose {
            "debug,syzlang_parser=off"
        } else {
            "warn,syzlang_parser=off"
        })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    hotfuzz_vm::process::install_signal_handlers();
    let code = match cli::dispatch(cli).and_then(|code| cli::flush_stdout().map(|()| code)) {
        Ok(code) => code,
        // The reader went away (`| head`): stop quietly, as other tools do.
        Err(e) if e.downcast_ref::<cli::StdoutClosed>().is_some() => 0,
        Err(e) => {
            eprintln!("hotfuzz: error: {e:#}");
            2
        }
    };
    // Exiting does not run destructors of leaked guests; make sure none survives.
    hotfuzz_vm::process::kill_all();
    std::process::exit(code);
}
