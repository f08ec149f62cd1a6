//! The `hello5` workload shared by the engine crash test and its child:
//! an orchestration calling a trivial activity 5 times in sequence.

use basalt_runtime::sdk::{ActivityError, OrchestrationError, Registry, RegistryError};

/// Orchestration name.
pub const ORCHESTRATION: &str = "hello5";
/// Activity name.
pub const ACTIVITY: &str = "hello";

/// The registry of the workload.
pub fn registry() -> Result<Registry, RegistryError> {
    Registry::builder()
        .register_orchestration_typed::<String, Vec<String>, _, _>(
            ORCHESTRATION,
            |ctx, name: String| async move {
                let mut greetings = Vec::new();
                for i in 0..5 {
                    let greeting: String =
                        ctx.call_activity(ACTIVITY, &format!("{name}#{i}")).await?;
                    greetings.push(greeting);
                }
                Ok::<_, OrchestrationError>(greetings)
            },
        )
        .register_activity_typed::<String, String, _, _>(ACTIVITY, |_ctx, who: String| async move {
            Ok::<_, ActivityError>(format!("hello {who}"))
        })
        .build()
}

/// The output an instance started with `name` must end with.
pub fn expected_output(name: &str) -> Vec<String> {
    (0..5).map(|i| format!("hello {name}#{i}")).collect()
}
