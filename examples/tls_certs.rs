//! Writes a small PKI for trying TLS and for the TLS tests: a CA, a server certificate for
//! `localhost` and 127.0.0.1, a client certificate (mTLS), and certificates that must be
//! refused: an expired server certificate, and a client certificate of a foreign CA.
//! ECDSA P-256 keys in PKCS#8 PEM (what rustls, Python's `ssl`, Volo and tonic all read).
//!
//! ```text
//! cargo run -p examples --bin tls_certs -- DIR
//! target/release/echo_server --tls-cert DIR/server.pem --tls-key DIR/server.key \
//!     [--tls-client-ca DIR/ca.pem]
//! ```

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

fn new_ca(name: &str) -> Result<(String, Issuer<'static, KeyPair>), rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

/// A leaf certificate and its key, signed by `issuer`.
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
    expired: bool,
) -> Result<(String, String), rcgen::Error> {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(dir: &Path, name: &str, pem: &str) -> std::io::Result<()> {
    std::fs::write(dir.join(name), pem)
}

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: tls_certs DIR");
        std::process::exit(2)
    };
    let dir = Path::new(&dir);
    if let Err(e) = run(dir) {
        eprintln!("tls_certs: {e}");
        std::process::exit(1)
    }
    println!("tls_certs: wrote ca.pem, server.pem/.key, client.pem/.key, expired.pem/.key, foreign-ca.pem, foreign-client.pem/.key to {}", dir.display());
}

fn run(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let sans = ["localhost", "127.0.0.1"];
    let (ca_pem, ca) = new_ca("netpoll test CA")?;
    write(dir, "ca.pem", &ca_pem)?;
    let (cert, key) = leaf(
        &ca,
        "localhost",
        &sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        false,
    )?;
    write(dir, "server.pem", &cert)?;
    write(dir, "server.key", &key)?;
    let (cert, key) = leaf(
        &ca,
        "client",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        false,
    )?;
    write(dir, "client.pem", &cert)?;
    write(dir, "client.key", &key)?;
    let (cert, key) = leaf(
        &ca,
        "localhost",
        &sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        true,
    )?;
    write(dir, "expired.pem", &cert)?;
    write(dir, "expired.key", &key)?;
    let (foreign_pem, foreign) = new_ca("a foreign CA")?;
    write(dir, "foreign-ca.pem", &foreign_pem)?;
    let (cert, key) = leaf(
        &foreign,
        "intruder",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        false,
    )?;
    write(dir, "foreign-client.pem", &cert)?;
    write(dir, "foreign-client.key", &key)?;
    Ok(())
}
