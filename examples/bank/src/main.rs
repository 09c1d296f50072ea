//! The example bank service. Run: `cargo run -p bank -- demo`.
fn main() {
    println!("bank: coming soon");
}
