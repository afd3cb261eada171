//! The Compose files are valid Compose: checked against the Compose Specification's schema
//! the way Compose reads them (tests/python/check_compose.py).

use crate::common;

#[test]
fn the_compose_files_are_valid_compose() {
    let root = env!("CARGO_MANIFEST_DIR");
    let files: Vec<String> = std::fs::read_dir(root)
        .expect("the project's root")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("docker-compose") && n.ends_with(".yml"))
        .map(|n| format!("{root}/{n}"))
        .collect();
    assert!(!files.is_empty());
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let (ok, output) = common::run_python("check_compose.py", &args);
    assert!(ok, "{output}");
    assert_eq!(
        output.matches("valid Compose").count(),
        files.len(),
        "{output}"
    );
}
