//! Compiles the vendored Durable Task sidecar protocol with `protox` (a
//! protobuf compiler in Rust), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/orchestrator_service.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    // The schema at run time too: `wire_limits` walks a request's bytes by
    // it before prost decodes them.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("sidecar_descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // Hand-written so a long history's encoded bytes can be sent as
        // they are (src/history_wire.rs): the same fields on the wire.
        .extern_path(
            ".OrchestratorRequest",
            "crate::history_wire::OrchestratorRequest",
        )
        .codec_path("crate::wire_limits::BoundedCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
