//! The `meshplay` binary: everything lives in the library; see
//! [`meshplay::cli`].

// The binary, not the library, picks the allocator: an application that
// embeds the client keeps its own. glibc's malloc was slow where one
// runtime thread frees what another allocated (docs/decisions.md, "mimalloc").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    meshplay::cli::main()
}
