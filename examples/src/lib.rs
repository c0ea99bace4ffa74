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
