//! `openapi.yaml` at the root is what `weft openapi` prints; regenerate it with
//! `cargo run -- openapi > openapi.yaml` when the API changes.

#[test]
fn openapi_yaml_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = weft::api::spec_yaml();
    if committed != generated {
        let diff = similar::TextDiff::from_lines(&committed, &generated)
            .unified_diff()
            .context_radius(2)
            .header("openapi.yaml (committed)", "weft openapi (generated)")
            .to_string();
        panic!(
            "openapi.yaml is stale: run `cargo run -- openapi > openapi.yaml` and commit it\n{diff}"
        );
    }
    for path in [
        "/health",
        "/api/targets",
        "/api/targets/{id}",
        "/api/targets/disable-batch",
        "/api/events",
        "/api/state",
    ] {
        assert!(
            generated.contains(&format!("{path}:")),
            "{path} missing from the spec"
        );
    }
}

#[test]
fn weft_openapi_prints_the_spec() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("openapi")
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), weft::api::spec_yaml());
}
