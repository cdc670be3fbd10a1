#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init("product");
    let settings = platform::Settings::from_env("product")?;
    product_service::run(settings).await
}
