/// mimalloc: Polars' decoders allocate and free large column buffers part after part; the
/// system allocator returns them to the kernel each time and pays for fresh page faults.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sendtime::cli::main()
}
