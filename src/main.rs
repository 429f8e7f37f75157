//! The `catbert` binary: parse, run, turn the outcome into one line and an exit code.

use clap::Parser;

use catbert::cli::{exit_code, render_error, run, Cli};

fn main() {
    let cli = Cli::parse();
    if let Some(gpu) = catbert::cli::launch::gpu_build_for(cli.command.device()) {
        let err = catbert::cli::launch::hand_over(&gpu);
        eprintln!(
            "notice: could not start {}: {err}; running on the CPU",
            gpu.display()
        );
    }
    catbert::cli::signals::install();
    catbert::runtime::init(cli.command.threads());
    let verbose = cli.verbose;
    if let Err(err) = run(cli) {
        eprintln!("error: {}", render_error(&err, verbose));
        std::process::exit(exit_code(&err));
    }
}
