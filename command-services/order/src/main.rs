#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::cli::service(
        "order",
        "Order service: places, confirms, rejects and cancels orders; long-polls for their outcome.",
    );
    runtime::telemetry::init("order");
    runtime::memory::release_when_quiet();
    let settings = runtime::Settings::from_env("order")?;
    order_service::run(settings).await
}
