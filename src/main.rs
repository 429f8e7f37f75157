//! The `catbert` binary: parse, run, turn the outcome into one line and an exit code.

use clap::Parser;

use catbert::cli::{run, Cli};

fn main() {
    let cli = Cli::parse();
    if let Some(gpu) = catbert::cli::launch::gpu_build_for(cli.command.device()) {
        let err = catbert::cli::launch::hand_over(&gpu);
        eprintln!(
            "notice: could not start {}: {err}; running on the CPU",
            gpu.display()
        );
    }
    let verbose = cli.verbose;
    if let Err(err) = run(cli) {
        if verbose {
            eprintln!("error: {err:?}");
        } else {
            eprintln!("error: {err:#}");
        }
        let input_error = err
            .chain()
            .find_map(|e| e.downcast_ref::<catbert::Error>())
            .is_some_and(catbert::Error::is_input_error);
        std::process::exit(if input_error { 2 } else { 1 });
    }
}
