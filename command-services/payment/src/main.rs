#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::cli::service(
        "payment",
        "Payment service: customer accounts and credit; authorizes, confirms and refunds payments for the saga.",
    );
    runtime::start_service("payment");
    let settings = runtime::Settings::from_env("payment")?;
    payment_service::run(settings).await
}
