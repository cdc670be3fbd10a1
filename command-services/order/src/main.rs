#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::cli::service(
        "order",
        "Order service: places, confirms, rejects and cancels orders; long-polls for their outcome.",
    );
    runtime::start_service("order");
    let settings = runtime::Settings::from_env("order")?;
    order_service::run(settings).await
}
