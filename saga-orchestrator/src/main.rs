#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("diagram") {
        // The saga as Mermaid text, generated from its definition (for the docs).
        print!("{}", saga_orchestrator::definition::mermaid(&saga_orchestrator::definition::CREATE_ORDER));
        return Ok(());
    }
    runtime::telemetry::init("saga-orchestrator");
    let settings = runtime::Settings::from_env("saga-orchestrator")?;
    saga_orchestrator::run(settings).await
}
