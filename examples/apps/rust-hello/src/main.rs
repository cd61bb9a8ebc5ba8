//! rust-hello: the program in the example Rust runtime image.

fn main() {
    let home = std::env::var("HOME").unwrap_or_default();
    println!("hello from rust-hello, home {home}");
}
