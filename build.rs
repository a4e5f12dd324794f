//! The migrations in `migrations/` are embedded by `refinery::embed_migrations!`, which cargo
//! does not know reads that folder: without this, a new migration file would not rebuild the
//! binary and the service would run without it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
