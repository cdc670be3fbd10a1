use notification_service::Service;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init("notification");
    let settings = platform::Settings::from_env("notification")?;
    Service::build(settings).await?.run_until_stopped().await
}
