//! Prints the Rust generated for the IDL files given as arguments.

fn main() -> Result<(), netpoll_codec_build::Error> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    let generated = netpoll_codec_build::Config::new()
        .include_dir("idl")
        .generate(&files)?;
    for w in &generated.warnings {
        eprintln!("warning: {w}");
    }
    for (_, source) in &generated.modules {
        print!("{source}");
    }
    Ok(())
}
