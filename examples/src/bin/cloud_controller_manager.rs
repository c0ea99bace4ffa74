//! The cloud-controller-manager: upstream's flags and behaviour on kube-rs (`controller_core::app`), with the
//! providers compiled in by cargo feature. See `docs/operating.md`.
//!
//! ```text
//! cloud-controller-manager --cloud-provider=fake --cloud-config=fake.yaml --kubeconfig=DIR/kubeconfig
//! cloud-controller-manager --cloud-provider=fake --print-config-schema
//! ```

use std::process::ExitCode;

use controller_core::app::{App, AppError, exit};

fn main() -> ExitCode {
    match kube_cloud_examples::provider_registry() {
        Ok(providers) => app(App::cloud_controller_manager(providers)).main(),
        Err(e) => exit(Err(AppError::Provider(e))),
    }
}

/// The providers' own controllers: provider-aws' `tagging` (off by default; `--controllers=*,tagging --tags=…`).
fn app(app: App) -> App {
    #[cfg(feature = "aws")]
    let app = app.controllers_with_flags::<provider_aws::tagging::TaggingOptions>(
        provider_aws::tagging::register_controllers,
    );
    app
}
