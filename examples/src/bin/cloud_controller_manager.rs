//! The cloud-controller-manager: upstream's flags and behaviour on kube-rs, with the providers compiled in by
//! cargo feature. See `docs/operating.md`.
//!
//! ```text
//! cloud-controller-manager --cloud-provider=fake --cloud-config=fake.yaml --kubeconfig=DIR/kubeconfig
//! cloud-controller-manager --cloud-provider=fake --print-config-schema
//! ```

use std::process::ExitCode;

use clap::Parser;
use kube_cloud_examples::ccm::{LoggingFormat, Options, print_config_schema, run};
use kube_cloud_examples::init_logging;

fn main() -> ExitCode {
    let options = Options::parse();
    init_logging(options.logging_format == LoggingFormat::Json);
    if options.print_config_schema {
        return exit(print_config_schema(&options));
    }
    let plan = match options.plan() {
        Ok(plan) => plan,
        Err(e) => return exit(Err(e)),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return exit(Err(e.into())),
    };
    exit(runtime.block_on(run(plan)))
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
