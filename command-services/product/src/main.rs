#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::cli::service(
        "product",
        "Product service: the catalog and stock; reserves, releases, commits and returns stock for the saga.",
    );
    runtime::start_service("product");
    let settings = runtime::Settings::from_env("product")?;
    product_service::run(settings).await
}
