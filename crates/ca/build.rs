//! Generates the remora.v1 Identity client and server. protoc comes from
//! protoc-bin-vendored, so the build needs no protoc on the machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["../../proto/remora/v1/identity.proto"],
        &["../../proto"],
    )?;
    println!("cargo:rerun-if-changed=../../proto/remora/v1/identity.proto");
    Ok(())
}
