//! The storage benchmark in its --quick mode, so the program cannot rot. It asserts
//! only that it runs and prints every row; figures are never judged in tests.

#[test]
fn storage_benchmark_quick_mode_prints_its_table() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgbaas-bench-storage"))
        .arg("--quick")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for row in [
        "get by id, big collection",
        "list first 20, small collections",
        "create, big collection",
        "count readable",
        "equality on an indexed field",
        "range on an indexed field",
        "count=true on a filter matching 1%",
    ] {
        let line = text.lines().find(|l| l.contains(row)).unwrap_or_else(|| panic!("no row {row:?} in\n{text}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        assert!(cells[1..].iter().all(|c| c.parse::<f64>().is_ok()), "{line}");
    }
}
