// The extension's SQL lives in ../sql and is compiled in with extension_sql_file!
// (include_str!). Say so to cargo explicitly, so that editing a .sql file always
// rebuilds the extension and its generated install script.
fn main() {
    for entry in std::fs::read_dir("../sql").expect("../sql").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "sql") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-changed=../sql");
}
