//! The bundled binaries of kube-cloud-rs, thin `main`s over `controller_core::app`; this library holds only the
//! providers compiled into them (cargo features `fake`, `aws`).

/// The providers compiled into this binary (cargo features `fake`, `aws`), by name.
pub fn provider_registry()
-> Result<cloudprovider_api::ProviderRegistry, cloudprovider_api::RegistryError> {
    #[allow(unused_mut)]
    let mut registry = cloudprovider_api::ProviderRegistry::new();
    #[cfg(feature = "fake")]
    provider_fake::register(&mut registry)?;
    #[cfg(feature = "aws")]
    provider_aws::register(&mut registry)?;
    Ok(registry)
}

/// Runs `main` on a new multi-threaded tokio runtime and turns its result into the exit code: 0, or 1 with
/// `error: <the error and its causes, each once>` on stderr — never a `Debug` dump or a backtrace, whatever
/// `RUST_BACKTRACE` says (what `fn main() -> anyhow::Result<()>` would print).
pub fn run_main<F>(main: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(main));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", controller_core::app::error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
