//! The `meshplay` binary: everything lives in the library; see
//! [`meshplay::cli`].

fn main() -> std::process::ExitCode {
    meshplay::cli::main()
}
