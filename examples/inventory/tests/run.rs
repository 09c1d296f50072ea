//! The example runs and tells its story: the old event upcast, the repeat absorbed, the
//! refusal in words, the read model right before and after a replay.

use std::process::Command;

#[test]
fn the_inventory_service_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_inventory"))
        .arg(dir.path().join("inventory.db"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("repeat of a command id: 0 appended"),
        "{stdout}"
    );
    assert!(
        stdout.contains("refused: only 12 on hand, 100 requested"),
        "{stdout}"
    );
    assert!(stdout.contains(": 12 on hand\n"), "{stdout}");
    assert!(stdout.contains("replayed 4 events: "), "{stdout}");
    assert!(stdout.trim_end().ends_with(": 12 on hand"), "{stdout}");
}

#[test]
fn the_readme_shows_this_main_as_it_is() {
    let main = include_str!("../src/main.rs");
    let readme = include_str!("../../../README.md");
    let snippet = &main[main.find("#[tokio::main]").unwrap()..];
    assert!(
        readme.contains(snippet.trim_end()),
        "README's inventory code differs from examples/inventory/src/main.rs: copy it again"
    );
}
