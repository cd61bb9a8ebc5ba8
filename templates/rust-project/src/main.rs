fn main() {
    println!("hello from my-project");
}
