//! Compiles the .proto files with a vendored `protoc`, so no system package is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/booking/v1/availability.proto",
        "proto/identity/v1/directory.proto",
        "proto/marketing/v1/campaigns.proto",
        "proto/marketing/v1/vouchers.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &protos, &["proto"])?;
    Ok(())
}
