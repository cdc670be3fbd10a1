#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::cli::service(
        "product",
        "Product service: the catalog and stock; reserves, releases, commits and returns stock for the saga.",
    );
    runtime::telemetry::init("product");
    runtime::memory::release_when_quiet();
    let settings = runtime::Settings::from_env("product")?;
    product_service::run(settings).await
}
