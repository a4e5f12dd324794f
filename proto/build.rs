//! Generates the Rust types and the tonic client/server for `definitions/*.proto`.
//! protoc comes from the protoc-bin-vendored crate, so a fresh machine needs no setup;
//! set `PROTOC` to use another protoc.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "message.proto",
    "onchain_event.proto",
    "hub_event.proto",
    "request_response.proto",
    "rpc.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // prost-build 0.14 emits no rerun-if-changed lines of its own.
    println!("cargo:rerun-if-changed=definitions");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PROTOC");

    let mut config = tonic_prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    let dir = PathBuf::from("definitions");
    let files: Vec<PathBuf> = FILES.iter().map(|file| dir.join(file)).collect();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &files, &[dir])?;
    Ok(())
}
