fn main() {
    volo_build::ConfigBuilder::default().write().expect("volo code generation");
}
