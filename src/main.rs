// mimalloc: replay and plan allocate millions of small strings and vectors, where
// it spends a third less CPU than the system allocator (bench/replay.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    stockshift::cli::main()
}
