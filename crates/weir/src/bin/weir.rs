//! The standalone `weir` binary: inspection commands on a state directory. Running or resuming
//! a task needs the binary that defines it (which gets the same CLI from `weir::cli::main()`).

fn main() -> std::process::ExitCode {
    weir::cli::main()
}
