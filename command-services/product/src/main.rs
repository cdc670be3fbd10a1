#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::telemetry::init("product");
    let settings = runtime::Settings::from_env("product")?;
    product_service::run(settings).await
}
