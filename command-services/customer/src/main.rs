#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::cli::service(
        "customer",
        "Customer service: registers customer profiles; queries from the customers read model.",
    );
    runtime::start_service("customer");
    let settings = runtime::Settings::from_env("customer")?;
    customer_service::run(settings).await
}
