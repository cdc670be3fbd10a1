use notification_service::Service;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::cli::service(
        "notification",
        "Notification service: e-mails customers about their orders (SMTP), from events only.",
    );
    runtime::start_service("notification");
    let settings = runtime::Settings::from_env("notification")?;
    Service::build(settings).await?.run_until_stopped().await
}
