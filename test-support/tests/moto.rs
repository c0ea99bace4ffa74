//! moto's server starts from the cached venv, answers, resets, and stops on drop.
use anyhow::{Result, ensure};
use test_support::Moto;

#[tokio::test]
async fn moto_starts_resets_and_stops() -> Result<()> {
    let moto = Moto::start().await?;
    ensure!(moto.endpoint_url() == format!("http://127.0.0.1:{}", moto.port()));
    moto.reset().await?;
    let port = moto.port();
    drop(moto);
    ensure!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "moto still listens on {port}"
    );
    Ok(())
}
