// `embed_migrations!` reads the migrations directory at compile time, and cargo does not see a
// new migration in it on its own: without this, an incremental build keeps the old list.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
