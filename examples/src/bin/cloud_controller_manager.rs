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
        Ok(providers) => App::cloud_controller_manager(providers).main(),
        Err(e) => exit(Err(AppError::Provider(e))),
    }
}
