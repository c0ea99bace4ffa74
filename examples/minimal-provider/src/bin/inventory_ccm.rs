//! The inventory provider's own cloud-controller-manager (feature `ccm`): the app of `controller-core` with the
//! `inventory` provider and one controller of the provider's own, `power-labels`. Upstream's flags apply:
//!
//! ```text
//! inventory-ccm --cloud-provider=inventory --cloud-config=inventory.yaml --kubeconfig=DIR/kubeconfig \
//!     --controllers='*,power-labels'
//! ```

use std::process::ExitCode;
use std::time::Duration;

use controller_core::app::{App, AppError, exit};
use minimal_provider::power_labels::PowerLabels;

fn main() -> ExitCode {
    let mut providers = cloudprovider_api::ProviderRegistry::new();
    if let Err(e) = minimal_provider::register(&mut providers) {
        return exit(Err(AppError::Provider(e)));
    }
    App::cloud_controller_manager(providers)
        .controller(PowerLabels::new(Duration::from_secs(30)))
        .main()
}
